"""The base view of the API: idempotent POSTs and an audit log of key use."""

from __future__ import annotations

import hashlib
import json
import re

from django.db import IntegrityError, transaction
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from arena.api.errors import error_body
from arena.auth import Principal, key_claimed
from arena.models import ApiKey, IdempotencyRecord, KeyUse

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 100


REFUSED = (401, 403, 429)
IDEMPOTENCY_KEY_RE = re.compile(rf"[!-~]{{1,{MAX_IDEMPOTENCY_KEY}}}")


def idempotency_key_valid(key: str) -> bool:
    """1-100 printable ASCII characters (no spaces or control characters: they fit the record's column)."""
    return IDEMPOTENCY_KEY_RE.fullmatch(key) is not None


class _Reply(Exception):
    """Raised after authentication to answer from the idempotency record instead of running the handler."""

    def __init__(self, response: Response) -> None:
        self.response = response


class BoundedJsonParser(JSONParser):
    """JSON bodies; nesting too deep for Python's decoder is a malformed body (400), not a server error."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - the body is nested too deeply.") from exc


class ApiView(APIView):
    """POSTs with an ``Idempotency-Key`` header run in one transaction with the record of their response, so a
    retry returns the first response verbatim (header ``Idempotent-Replayed: true``) and writes nothing twice.
    The same key with a different body is refused (422 ``idempotency_key_reused``)."""

    parser_classes = [BoundedJsonParser]

    def dispatch(self, request, *args, **kwargs):
        response = self._dispatch_once(request, *args, **kwargs)
        # After the request's transaction, so that a refused (rolled back) attempt is recorded too.
        self._audit(response)
        return response

    def _dispatch_once(self, request, *args, **kwargs):
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if request.method != "POST" or key is None:
            return super().dispatch(request, *args, **kwargs)
        digest = hashlib.sha256(
            request.method.encode() + request.path.encode() + b"\0" + request.body
        ).hexdigest()
        self._idempotency = (key, digest)
        self._short_circuited = False
        try:
            with transaction.atomic():
                response = super().dispatch(request, *args, **kwargs)
                api_key = self._api_key()
                if (
                    api_key is not None
                    and response.status_code < 500
                    and not self._short_circuited
                    and idempotency_key_valid(key)
                ):
                    IdempotencyRecord.objects.create(
                        api_key=api_key,
                        key=key,
                        method=request.method,
                        path=request.path[:300],
                        request_hash=digest,
                        status_code=response.status_code,
                        body=json.loads(JSONRenderer().render(response.data) or b"null"),
                    )
                return response
        except IntegrityError:
            # A concurrent request with the same key committed first: everything here was rolled back.
            record = self._record(key)
            if record is None:
                raise
            return self.finalize_response(self.request, self._replay(record, digest))

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if getattr(self, "_idempotency", None) is None:
            return
        key, digest = self._idempotency
        if not idempotency_key_valid(key):
            self._short_circuited = True
            raise _Reply(
                Response(
                    error_body(
                        "invalid_idempotency_key",
                        f"{IDEMPOTENCY_HEADER} must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters.",
                        IDEMPOTENCY_HEADER,
                    ),
                    status=400,
                )
            )
        record = self._record(key)
        if record is not None:
            self._short_circuited = True
            raise _Reply(self._replay(record, digest))

    def handle_exception(self, exc):
        if isinstance(exc, _Reply):
            return exc.response
        return super().handle_exception(exc)

    def _audit(self, response) -> None:
        """KeyUse: one row per write made with a key, and per refused attempt (401, 403, 429) whose key is known
        (a revoked key, or a wrong secret for an existing prefix, counts as known)."""
        request = getattr(self, "request", None)
        if request is None:
            return
        api_key = self._api_key()
        if api_key is None and response.status_code == 401:
            api_key = key_claimed(request)
        if api_key is None:
            return
        if request.method in ("GET", "HEAD", "OPTIONS") and response.status_code not in REFUSED:
            return
        KeyUse.objects.create(
            api_key=api_key,
            method=request.method,
            path=request.path[:300],
            status=response.status_code,
            ip=request.META.get("REMOTE_ADDR") or None,
        )

    def _api_key(self) -> ApiKey | None:
        user = getattr(getattr(self, "request", None), "user", None)
        return user.api_key if isinstance(user, Principal) else None

    def _record(self, key: str) -> IdempotencyRecord | None:
        api_key = self._api_key()
        if api_key is None:
            return None
        return IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()

    @staticmethod
    def _replay(record: IdempotencyRecord, digest: str) -> Response:
        if record.request_hash != digest:
            return Response(
                error_body(
                    "idempotency_key_reused",
                    "This Idempotency-Key was used for a different request; use a new key.",
                    IDEMPOTENCY_HEADER,
                ),
                status=422,
            )
        return Response(record.body, status=record.status_code, headers={"Idempotent-Replayed": "true"})
