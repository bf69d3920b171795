"""Which relay connections may exist: admission at the handshake, revocation while open, owner error reports.

A relay token is sealed and expiring (:mod:`policy_server.relay_token`), but only the arena knows whether its
session is still open, whether the lab key it was minted for is still valid and whether another relay already
serves the slot. So the relay asks the arena's internal relay API (``/api/v1/relay/...``, authenticated with
:func:`~policy_server.relay_token.relay_api_credential`, never the raw secret):

- ``admit/`` once per handshake: the arena checks the session, the lease and the key and records an
  *attachment* of this connection to the (session, slot) with a short lease, refusing a second one while it
  lives (so one connection per slot holds across any number of relays). Unreachable arena: refused (503).
  The answer also names the ``arena_nonce`` values the slot's policy may serve and whether it must serve one
  (:class:`EndpointProof`), which the relay checks on the policy's metadata frame.
- ``status/`` every ``poll_interval`` seconds, one batched call for every open connection: the arena renews
  the attachments of those still valid and names the others, which the relay closes (code 1008). No request
  per frame; a revoked key or a vote stops the session's connections within one poll period. If the arena
  cannot be reached for longer than the attachment lease, the relay closes every connection (their
  attachments lapse on the arena side, so it could no longer vouch for them).
- ``release/`` when a connection ends, so that a reconnect is admitted at once.
- ``incidents/``: a policy's full error text, for its owner only (see :meth:`ArenaLink.report_policy_error`).

Without an arena (``arena=None``: a standalone relay for development and protocol tests) only the token's own
expiry and a relay-local one-connection-per-slot rule apply.

HTTP goes through requests (one ``Session`` per worker thread, kept-alive connections, no proxy or netrc from the
environment), called in worker threads so that the event loop never waits on the arena. Redirects are never
followed and answers are read up to a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode
from websockets.protocol import State

from policy_server._compat import to_thread
from policy_server.relay_token import TokenClaims, relay_api_credential

logger = logging.getLogger(__name__)

ARENA_URL_ENV = "ARENA_INTERNAL_URL"
API_PREFIX = "/api/v1/relay"
AUTH_SCHEME = "Relay"
MAX_INCIDENT_BYTES = 8 * 1024
"""Policy error text sent to the arena is cut to this many UTF-8 bytes."""
MAX_RESPONSE_BYTES = 1024 * 1024
STATUS_BATCH = 500
"""Connections per ``status/`` request (keeps each body well under the arena's request size limit)."""
SESSION_CLOSED_CODE = CloseCode.POLICY_VIOLATION
ARENA_LOST_CODE = CloseCode.TRY_AGAIN_LATER


class ArenaUnreachable(Exception):
    """The arena's relay API did not answer, or answered with something other than its contract."""


class AdmissionRefused(Exception):
    """The handshake is refused with HTTP ``status`` and a short ``message`` (no policy detail)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class EndpointProof:
    """The ``arena_nonce`` the policy's metadata must carry: when present, one of ``nonces`` (its
    organization's); when ``required`` (the policy proved control of its endpoint), present. Checked by the relay
    on the metadata frame (:meth:`check`), so that a server other than the owner's answering at the endpoint
    (another organization's, reached through a name that pointed elsewhere during the checks) is never relayed.
    """

    required: bool
    nonces: frozenset[str]

    def check(self, served: Any) -> tuple[str, str] | None:
        """None when ``served`` (the metadata's ``arena_nonce``, or None) passes; else (incident kind, detail)
        for the policy's owner."""
        if isinstance(served, str) and served:
            if any(hmac.compare_digest(served.encode(), nonce.encode()) for nonce in self.nonces):
                return None
            return (
                "endpoint_claimed",
                "the server at this endpoint serves another organization's registration nonce "
                "(arena_nonce): the session was refused; point the endpoint back at your own server",
            )
        if self.required:
            return (
                "nonce_mismatch",
                "this policy proved control of its endpoint, but the server answering there now serves no "
                "registration nonce (arena_nonce): the session was refused; serve the policy's endpoint_nonce",
            )
        return None


@dataclass(frozen=True)
class Admission:
    """The arena's answer to an admitted connection: its attachment lives ``lease_s`` seconds unless renewed;
    ``endpoint_proof`` is what the policy's metadata must carry (None: nothing to check)."""

    lease_s: float
    endpoint_proof: EndpointProof | None = None


class ArenaLink:
    """Client of the arena's internal relay API at ``arena_url`` (e.g. ``http://10.0.0.5:8000``).

    Every method blocks (at most ``timeout`` seconds per request) and is safe to call from several threads.
    """

    def __init__(self, arena_url: str, secret: bytes | str, *, timeout: float = 5.0) -> None:
        if not arena_url.startswith(("http://", "https://")):
            raise ValueError(f"the arena URL must be http:// or https://, got {arena_url!r}")
        self.arena_url = arena_url.rstrip("/")
        self._timeout = timeout
        self._headers = {
            "Authorization": f"{AUTH_SCHEME} {relay_api_credential(secret)}",
            "Content-Type": "application/json",
        }
        # Incident reports are sent from the loop's hook without waiting; one thread keeps them in order.
        self._reports = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-incidents")

    def admit(self, claims: TokenClaims, connection_id: str) -> Admission:
        """Ask whether ``claims`` may open a connection now; raises :class:`AdmissionRefused` or
        :class:`ArenaUnreachable`."""
        status, body = self._post("admit/", {**_identity(claims), "connection": connection_id})
        if status == 200:
            lease = body.get("lease_s")
            if not isinstance(lease, (int, float)) or lease <= 0:
                raise ArenaUnreachable("the arena's admission answer has no lease")
            return Admission(lease_s=float(lease), endpoint_proof=_endpoint_proof(body))
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        if status in (403, 404, 409):
            # The arena's codes are about the session and key only; pass a fixed sentence per status.
            if error.get("code") == "slot_in_use":
                raise AdmissionRefused(409, "this slot already has a connection")
            raise AdmissionRefused(403, "relay token no longer valid (session closed or key revoked)")
        raise ArenaUnreachable(f"the arena answered the admission with HTTP {status}")

    def status(self, connections: dict[str, TokenClaims]) -> set[str]:
        """The ids among ``connections`` (id -> claims) that must close; renews the others' attachments.
        Raises :class:`ArenaUnreachable`."""
        closed: set[str] = set()
        items = list(connections.items())
        for start in range(0, len(items), STATUS_BATCH):
            batch = items[start : start + STATUS_BATCH]
            status, body = self._post(
                "status/",
                {"connections": [{**_identity(c), "connection": cid} for cid, c in batch]},
            )
            names = body.get("closed")
            if status != 200 or not isinstance(names, list):
                raise ArenaUnreachable(f"the arena answered the status call with HTTP {status}")
            closed.update(str(n) for n in names)
        return closed & set(connections)

    def release(self, connection_ids: Iterable[str]) -> None:
        """Free the attachments of connections that ended (best effort: they lapse by themselves anyway)."""
        ids = list(connection_ids)
        if ids:
            self._post("release/", {"connections": ids})

    def attach(
        self, *, policy: str, key: str, relay_url: str, connection_id: str, renew: bool = False
    ) -> float:
        """Ask whether ``key`` (an owner key) may serve the dial-out policy ``policy`` through this relay
        (reachable by other relays at ``relay_url``), and record (``renew``: renew) the attachment; returns its
        lease in seconds. Raises :class:`AdmissionRefused` (403: wrong key or not a dial-out policy; 409: a
        newer link replaced this one) or :class:`ArenaUnreachable`."""
        payload = {
            "policy": policy[:80],
            "key": key[:200],
            "relay": relay_url,
            "connection": connection_id,
            "renew": renew,
        }
        status, body = self._post("attach/", payload)
        if status == 200:
            lease = body.get("lease_s")
            if not isinstance(lease, (int, float)) or lease <= 0:
                raise ArenaUnreachable("the arena's attach answer has no lease")
            return float(lease)
        if status == 409:
            raise AdmissionRefused(409, "a newer link serves this policy")
        if status in (400, 403, 404):
            raise AdmissionRefused(403, "this key does not serve that policy in dial-out mode")
        raise ArenaUnreachable(f"the arena answered the attach call with HTTP {status}")

    def detach(self, connection_id: str) -> None:
        """Forget a dial-out link that closed (best effort: its attachment lapses by itself anyway)."""
        self._post("detach/", {"connection": connection_id})

    def locate(self, policy: str) -> str | None:
        """The internal URL of the relay a dial-out policy is attached to now, or None. Raises
        :class:`ArenaUnreachable`."""
        status, body = self._post("locate/", {"policy": policy[:80]})
        relay = body.get("relay")
        if status == 200 and isinstance(relay, str) and relay.startswith(("ws://", "wss://")):
            return relay
        if status == 404:
            return None
        raise ArenaUnreachable(f"the arena answered the locate call with HTTP {status}")

    def report_policy_error(self, claims: TokenClaims, kind: str, detail: str) -> None:
        """Queue a policy's error text (cut to :data:`MAX_INCIDENT_BYTES`) for its owner; returns at once.

        The signature of the relay's ``on_policy_error`` hook. Failures are logged, never raised: a report
        must not disturb the connection it came from.
        """
        text = detail.encode()[:MAX_INCIDENT_BYTES].decode(errors="ignore")
        payload = {**_identity(claims), "kind": kind[:40], "detail": text}
        self._reports.submit(self._send_report, payload)

    def flush_reports(self, timeout: float = 10.0) -> None:
        """Wait until the reports queued so far were sent (or failed); for an orderly shutdown and tests."""
        self._reports.submit(lambda: None).result(timeout)

    def close(self) -> None:
        """Send the queued reports, then stop the reporting thread."""
        self._reports.shutdown(wait=True)

    def _send_report(self, payload: dict[str, Any]) -> None:
        try:
            status, _ = self._post("incidents/", payload)
        except ArenaUnreachable as exc:
            logger.warning("could not report a policy error to the arena: %s", exc)
            return
        if status != 201:
            logger.warning("the arena refused a policy error report with HTTP %s", status)

    def _post(self, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # A fresh connection per call: a kept-alive one meets Nagle's algorithm on servers that write headers and
        # body apart (Django's runserver, gunicorn) and the client's delayed ACK, 40 ms per call on Linux. Calls
        # are few (one per handshake, one per poll), so the extra TCP handshake is the cheaper side.
        try:
            with requests.Session() as session:
                session.trust_env = (
                    False  # the arena's internal address: no proxy or netrc from the environment
                )
                with session.post(
                    f"{self.arena_url}{API_PREFIX}/{path}",
                    data=json.dumps(payload).encode(),
                    headers=self._headers,
                    timeout=(self._timeout, self._timeout),
                    allow_redirects=False,
                    stream=True,
                ) as response:
                    raw = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise ArenaUnreachable(f"cannot reach the arena at {self.arena_url}: {exc}") from exc
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ArenaUnreachable("the arena's answer is too large")
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise ArenaUnreachable(
                f"the arena answered {path} with HTTP {response.status_code}, not JSON"
            ) from exc
        return response.status_code, body if isinstance(body, dict) else {}


def _endpoint_proof(body: dict[str, Any]) -> EndpointProof | None:
    """The admission answer's ``endpoint_proof`` (null: nothing to check); raises :class:`ArenaUnreachable` for
    one that is not of its form (the relay cannot vouch for the endpoint without it)."""
    proof = body.get("endpoint_proof")
    if proof is None:
        return None
    required = proof.get("required") if isinstance(proof, dict) else None
    nonces = proof.get("nonces") if isinstance(proof, dict) else None
    if not isinstance(required, bool) or not isinstance(nonces, list):
        raise ArenaUnreachable("the arena's admission answer has a malformed endpoint proof")
    return EndpointProof(required=required, nonces=frozenset(n for n in nonces if isinstance(n, str) and n))


def _identity(claims: TokenClaims) -> dict[str, str]:
    return {"session": claims.session_id, "slot": claims.slot, "lab_key": claims.lab_key}


@dataclass
class _Open:
    connection: ServerConnection
    claims: TokenClaims
    endpoint_proof: EndpointProof | None = None


class RelayGate:
    """The relay's side of admission: the arena's verdict at each handshake (without an arena, a relay-local
    one-connection-per-slot rule), and a poll that closes connections whose session closed or whose key was
    revoked.

    ``arena`` is None for a standalone relay (see the module docstring). ``poll_interval`` in seconds.
    Runs on the relay's event loop; not thread-safe.
    """

    def __init__(self, arena: ArenaLink | None, *, poll_interval: float = 1.5) -> None:
        self.arena = arena
        self.poll_interval = poll_interval
        self._open: dict[str, _Open] = {}  # connection id -> its connection and claims
        self._by_connection: dict[int, str] = {}  # id(connection) -> connection id
        self._slots: set[tuple[str, str]] = set()  # standalone only: with an arena, its attachments decide
        self._lease_s = 10.0  # replaced by the arena's answer at the first admission
        self._last_status_ok = time.monotonic()
        self._poller: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    async def admit(self, connection: ServerConnection, claims: TokenClaims) -> None:
        """Admit ``connection`` for ``claims`` or raise :class:`AdmissionRefused`."""
        connection_id = secrets.token_hex(16)
        proof = None
        if self.arena is None:
            slot = (claims.session_id, claims.slot)
            if slot in self._slots:
                raise AdmissionRefused(409, "this slot already has a connection")
            self._slots.add(slot)
        else:
            # The arena's attachment decides (across relays, and with the session's state first, so that a
            # closed session's token gets 403 even while its last connection is still winding down here).
            try:
                admission = await to_thread(self.arena.admit, claims, connection_id)
            except ArenaUnreachable as exc:
                logger.warning("refusing a connection: %s", exc)
                raise AdmissionRefused(503, "the relay cannot confirm the session right now") from exc
            self._lease_s = admission.lease_s
            proof = admission.endpoint_proof
        if not self._open:
            self._last_status_ok = time.monotonic()
        self._open[connection_id] = _Open(connection, claims, proof)
        self._by_connection[id(connection)] = connection_id
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())

    def endpoint_proof(self, connection: ServerConnection) -> EndpointProof | None:
        """What the policy's metadata must carry for the admitted ``connection`` (None: nothing to check, as
        without an arena)."""
        connection_id = self._by_connection.get(id(connection))
        entry = self._open.get(connection_id) if connection_id is not None else None
        return entry.endpoint_proof if entry is not None else None

    def release(self, connection: ServerConnection) -> None:
        """Forget ``connection`` (its handler ended) and tell the arena; idempotent."""
        connection_id = self._by_connection.pop(id(connection), None)
        if connection_id is None:
            return
        entry = self._open.pop(connection_id)
        self._slots.discard((entry.claims.session_id, entry.claims.slot))
        if not self._open and self._poller is not None:
            self._poller.cancel()  # restarted by the next admission; a server shutting down leaves none behind
            self._poller = None
        if self.arena is not None:
            self._in_background(to_thread(self._release_quietly, [connection_id]))

    async def _poll(self) -> None:
        while self._open:
            await asyncio.sleep(self.poll_interval)
            # A connection whose handshake failed after admission never reached its handler: drop it here.
            for entry in [e for e in self._open.values() if e.connection.state is State.CLOSED]:
                self.release(entry.connection)
            if self.arena is None or not self._open:
                continue
            snapshot = {cid: entry.claims for cid, entry in self._open.items()}
            try:
                closed = await to_thread(self.arena.status, snapshot)
            except ArenaUnreachable as exc:
                silent = time.monotonic() - self._last_status_ok
                logger.warning("status call failed (%.0f s without an answer): %s", silent, exc)
                if silent > self._lease_s:
                    self._close_all(snapshot, ARENA_LOST_CODE, "relay lost contact with the arena")
                continue
            self._last_status_ok = time.monotonic()
            self._close_all(closed, SESSION_CLOSED_CODE, "session closed")

    def _close_all(self, connection_ids: Iterable[str], code: int, reason: str) -> None:
        for connection_id in list(connection_ids):
            entry = self._open.get(connection_id)
            if entry is not None:
                self.release(entry.connection)  # no longer polled, whatever the closing handshake takes
                self._in_background(entry.connection.close(code, reason))

    def _release_quietly(self, connection_ids: list[str]) -> None:
        assert self.arena is not None
        with contextlib.suppress(ArenaUnreachable):
            self.arena.release(connection_ids)

    def _in_background(self, awaitable: Any) -> None:
        task = asyncio.ensure_future(awaitable)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
