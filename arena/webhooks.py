"""Signed webhook POSTs to owners' receivers, through the same address guard as policy endpoints.

A webhook URL is typed in by an untrusted user and fetched from inside the arena's network, so it is treated
like a policy endpoint (:mod:`policy_server.netguard`): its host is resolved once, every address is checked
against ``ARENA_ENDPOINT_ALLOW`` and the request goes to the socket connected to the checked address (the
Host header and the TLS server name stay the URL's host). Redirects are never followed (``http.client``
follows none; a 3xx is a failed attempt), and at most :data:`MAX_RESPONSE_BYTES` of the answer are read and
none of it is kept: the delivery log records the status code and a fixed error code only.

The signature (``X-Arena-Signature: sha256=<hex>``) is HMAC-SHA256 under the user's webhook secret of
``<X-Arena-Timestamp>.<body>``: a receiver recomputes it over the raw body and refuses old timestamps to
stop replays.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from policy_server import netguard

MAX_RESPONSE_BYTES = 4096
SIGNATURE_HEADER = "X-Arena-Signature"
TIMESTAMP_HEADER = "X-Arena-Timestamp"
EVENT_HEADER = "X-Arena-Event"
DELIVERY_HEADER = "X-Arena-Delivery"
USER_AGENT = "policy-arena-webhook/1"
WEBHOOK_RE = re.compile(r"^https?://[!-~]+$")


@dataclass(frozen=True)
class WebhookResult:
    """One attempt: ``status`` is the HTTP status (None when no answer came), ``error`` a fixed code or None."""

    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body`` under ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def _as_endpoint(url: str) -> str:
    """The ws(s):// form of an http(s):// URL: the address guard parses and checks that form."""
    scheme, _, rest = url.partition("://")
    return ("wss://" if scheme.lower() == "https" else "ws://") + rest


def check_webhook_url(url: str, *, allow: frozenset[str]) -> None:
    """Raise :class:`policy_server.netguard.EndpointNotAllowed` for a URL that is not http(s)://, carries a user
    name, or whose host is (or now resolves to) an address class outside ``allow``."""
    if not WEBHOOK_RE.fullmatch(url):
        raise netguard.EndpointNotAllowed(
            "the webhook must be an http:// or https:// URL", reason="malformed"
        )
    netguard.check_endpoint(_as_endpoint(url), allow=allow)


def webhook_post(
    url: str, *, body: bytes, headers: dict[str, str], allow: frozenset[str], timeout: float
) -> WebhookResult:
    """POST ``body`` to ``url`` once; a 2xx answer is a delivery, anything else a failed attempt."""
    try:
        check_webhook_url(url, allow=allow)
        sock = netguard.open_socket(_as_endpoint(url), allow=allow, timeout=timeout)
    except netguard.EndpointNotAllowed as exc:
        return WebhookResult(None, "unreachable" if exc.reason == "unresolvable" else "address_not_allowed")
    except TimeoutError:
        return WebhookResult(None, "timeout")
    except OSError:
        return WebhookResult(None, "refused")
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sock.settimeout(timeout)
    try:
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, parts.port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        conn.sock = sock
        conn.request("POST", path, body=body, headers={"User-Agent": USER_AGENT, **headers})
        response = conn.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        status = response.status
    except ssl.SSLError:
        return WebhookResult(None, "tls_error")
    except TimeoutError:
        return WebhookResult(None, "timeout")
    except (OSError, http.client.HTTPException):
        return WebhookResult(None, "bad_response")
    finally:
        sock.close()
    if 200 <= status < 300:
        return WebhookResult(status, None)
    return WebhookResult(status, "redirect_refused" if 300 <= status < 400 else f"http_{status // 100}xx")
