"""Synchronous client for openpi-protocol policy servers, in any of the three dialects met in the wild.

Dialects, told apart from the metadata frame the server sends on connect:

- ``"arena"``: our :mod:`policy_server.server` (metadata carries ``arena_protocol``). ``endpoint`` is sent on
  every request; ``reset`` is answered with a msgpack confirmation.
- ``"roboarena"``: RoboArena's policy server, whose metadata is exactly its config dict (``PolicyServerConfig``:
  see :data:`ROBOARENA_METADATA_KEYS`). It needs ``endpoint`` on every request and answers ``reset`` with the
  text frame ``"reset successful"``.
- ``"openpi"``: openpi's reference server (arbitrary metadata). It passes every request key to the policy, so
  no ``endpoint`` key is sent, and it has no reset message: :meth:`PolicyClient.reset` is a no-op there.

Of the config's fields, the client itself honours ``needs_session_id`` (with a ``session_id`` given, every
observation carries it, as RoboArena's evaluator sends it) and gives every ``reset`` a ``reset_info`` holding the
session id; the cameras, resolution and action space are the episode runner's business (it builds the
observation).

A client holds one websocket and is not thread-safe (the protocol is lockstep). Only the standard library,
numpy, msgpack and websockets are used; nothing here imports Django.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection, connect
from websockets.version import version as websockets_version

from policy_server import netguard, wire
from policy_server.server import NONCE_KEY, PROTOCOL_KEY

logger = logging.getLogger(__name__)

# websockets' sync client takes ``max_queue`` from 14 on; 13.x (the last for Python 3.8) has no such argument
# and holds at most one incoming message anyway.
_SYNC_QUEUE: dict[str, Any] = {"max_queue": 2} if int(websockets_version.split(".")[0]) >= 14 else {}

ROBOARENA_METADATA_KEYS = frozenset(
    {
        "image_resolution",
        "needs_wrist_camera",
        "n_external_cameras",
        "needs_stereo_camera",
        "needs_session_id",
        "action_space",
    }
)
ROBOARENA_OPTIONAL_KEYS = frozenset({"image_resolution"})
"""Config keys a frame may lack and still be RoboArena's: our relay forwards only requirements of a checkable
form, and ``image_resolution: None`` (native frames) has none, so it arrives without that key."""
ROBOARENA_RESET_REPLY = "reset successful"


class PolicyClientError(Exception):
    """Base class of the errors a :class:`PolicyClient` raises."""


class PolicyUnavailable(PolicyClientError):
    """The server cannot be reached, refused the handshake, or went away mid-episode.

    ``reason`` classifies the failure without any text the peer sent: ``"unreachable"``, ``"refused"``
    (TCP connection refused), ``"tls_error"``, ``"not_websocket"`` (an HTTP answer that is no websocket
    handshake; ``status`` holds its code), ``"redirect_refused"`` (a 3xx: never followed),
    ``"unauthorized"`` or ``"address_not_allowed"`` (the endpoint guard refused the address; see
    :mod:`policy_server.netguard`), or ``"closed"`` (an open connection was lost; ``close_code`` holds the
    code the server closed with, 1006 when it vanished without a closing handshake).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "unreachable",
        status: int | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.close_code = close_code


class PolicyUnauthorized(PolicyUnavailable):
    """The handshake was refused with HTTP 401 or 403 (wrong API key, bad or expired relay token)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message, reason="unauthorized", status=status)


class AddressNotAllowed(PolicyUnavailable):
    """The endpoint guard refused to connect: ``address_class`` is the refused class (``"loopback"``,
    ``"metadata"``, ...) or ``"unresolvable"``."""

    def __init__(self, message: str, *, address_class: str) -> None:
        super().__init__(message, reason="address_not_allowed")
        self.address_class = address_class


class PolicyTimeout(PolicyClientError):
    """The server did not answer within the request timeout. The connection is dropped (lockstep is lost)."""


class PolicyError(PolicyClientError):
    """The server reported an error: ``traceback`` holds the text it sent (empty if it only closed 1011)."""

    def __init__(self, message: str, *, traceback: str = "") -> None:
        super().__init__(f"{message}\n{traceback}" if traceback else message)
        self.traceback = traceback


class PolicyProtocolError(PolicyClientError):
    """The server broke the wire protocol (undecodable frame, metadata that is not a dict, ...)."""


class BadAction(PolicyClientError):
    """The reply's ``actions`` are missing, not a finite numeric ``(H, D)`` array, or ``D`` is unexpected."""


def detect_dialect(metadata: Mapping[str, Any]) -> str:
    """``"arena"``, ``"roboarena"`` or ``"openpi"`` from the server's metadata frame.

    RoboArena's server sends ``dataclasses.asdict(PolicyServerConfig)``: every config key and nothing else.
    A frame holding only config keys, with all but :data:`ROBOARENA_OPTIONAL_KEYS`, is taken for RoboArena's;
    anything else without our protocol marker (empty metadata, a model name, a relay's openpi marker) for
    openpi's. An ``arena_nonce`` key (the proof of endpoint ownership an owner adds to any server's metadata)
    does not count: RoboArena's exact config plus a nonce is still RoboArena's dialect.
    """
    if PROTOCOL_KEY in metadata:
        return "arena"
    keys = set(metadata) - {NONCE_KEY}
    if keys <= ROBOARENA_METADATA_KEYS and ROBOARENA_METADATA_KEYS - ROBOARENA_OPTIONAL_KEYS <= keys:
        return "roboarena"
    return "openpi"


def validate_actions(result: Mapping[str, Any], *, action_dim: int | None = None) -> np.ndarray:
    """Return ``result["actions"]`` as a finite numeric ``(H, D)`` array with H >= 1.

    ``D`` must equal ``action_dim`` when that is given. Raises :class:`BadAction` otherwise.
    """
    if "actions" not in result:
        raise BadAction(f"reply has no 'actions' (keys: {sorted(map(str, result))})")
    actions = result["actions"]
    if isinstance(actions, list):
        try:
            actions = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise BadAction(f"'actions' is a list that is not numeric: {exc}") from exc
    if not isinstance(actions, np.ndarray) or actions.dtype.kind not in "biuf":
        raise BadAction(
            f"'actions' must be a numeric array, got {type(actions).__name__} "
            f"{getattr(actions, 'dtype', '')}".rstrip()
        )
    if actions.ndim != 2 or actions.shape[0] < 1:
        raise BadAction(f"'actions' must have shape (H, D) with H >= 1, got {actions.shape}")
    if action_dim is not None and actions.shape[1] != action_dim:
        raise BadAction(f"'actions' has action dim {actions.shape[1]}, expected {action_dim}")
    if not np.isfinite(actions).all():
        raise BadAction("'actions' holds NaN or infinite values")
    return actions


@dataclass(frozen=True)
class LatencyStats:
    """Round-trip latency of successful calls, in milliseconds (NaN when there were none)."""

    n: int
    mean_ms: float
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, latencies_ms: list[float]) -> LatencyStats:
        if not latencies_ms:
            return cls(0, float("nan"), float("nan"), float("nan"))
        values = np.asarray(latencies_ms)
        p50, p99 = np.percentile(values, [50, 99])
        return cls(len(values), float(values.mean()), float(p50), float(p99))


class PolicyClient:
    """One websocket to a policy server (directly, or through a relay).

    Connecting happens in the constructor, with ``retries`` extra attempts (exponential backoff starting at
    ``retry_delay_s``), each bounded by ``connect_timeout`` seconds including the metadata frame. If the
    connection is lost, the next :meth:`infer` or :meth:`reset` reconnects the same way; a call whose
    connection breaks while waiting raises and is not resent. ``action_dim`` (optional) is the expected
    ``D`` of the ``(H, D)`` actions. ``headers`` are extra HTTP handshake headers (e.g. a relay's
    ``Authorization: Bearer <token>``). ``limits`` bound every frame the server sends (decoded by the shared
    safe decoder, :func:`policy_server.wire.unpackb`); the default suits metadata and action replies.

    ``endpoint_allow`` (address classes, see :func:`policy_server.netguard.parse_allow`) makes every connect
    go through the endpoint guard: the host is resolved once, every address checked, and the websocket opened
    on a socket connected to a checked address (redirects are then refused, never followed). The arena's
    health checker sets it; an evaluator talking to the relay leaves it None.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        session_id: str | None = None,
        connect_timeout: float = 10.0,
        request_timeout: float = 30.0,
        retries: int = 2,
        retry_delay_s: float = 0.5,
        action_dim: int | None = None,
        limits: wire.Limits = wire.REPLY_LIMITS,
        endpoint_allow: frozenset[str] | None = None,
    ) -> None:
        self.url = url
        self.session_id = session_id
        self._endpoint_allow = endpoint_allow
        self._headers = dict(headers or {})
        if api_key:
            if any(name.lower() == "authorization" for name in self._headers):
                raise ValueError("give either api_key or an Authorization header, not both")
            self._headers["Authorization"] = f"Api-Key {api_key}"
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.action_dim = action_dim
        self._limits = limits
        self.latencies_ms: list[float] = []
        """Round-trip time of every successful infer, in milliseconds, in call order."""
        self._ws: ClientConnection | None = None
        self.metadata: dict[str, Any] = {}
        self.dialect = "openpi"
        self.connect()

    # -- connection ---------------------------------------------------------------------------------------

    def connect(self) -> None:
        """(Re)connect and read the metadata frame; sets :attr:`metadata` and :attr:`dialect`."""
        self._connect()

    def _connect(self) -> ClientConnection:
        self.close()
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_delay_s * 2 ** (attempt - 1))
            try:
                ws, self.metadata = self._open()
            except (PolicyUnauthorized, AddressNotAllowed):
                raise
            except (PolicyUnavailable, PolicyTimeout) as exc:
                last_error = exc
                logger.info("connect attempt %d to policy failed: %s", attempt + 1, exc)
                continue
            self._ws = ws
            self.dialect = detect_dialect(self.metadata)
            return ws
        message = f"cannot connect after {self.retries + 1} attempt(s): {last_error}"
        if isinstance(last_error, PolicyUnavailable):
            raise PolicyUnavailable(
                message, reason=last_error.reason, status=last_error.status, close_code=last_error.close_code
            ) from last_error
        raise PolicyTimeout(message) from last_error

    def _guarded_socket(self) -> socket.socket | None:
        """A socket connected to a checked address, or None when no guard is asked for. (Given a socket,
        websockets uses no proxy from the environment, which could otherwise send the connection elsewhere.)"""
        if self._endpoint_allow is None:
            return None
        try:
            return netguard.open_socket(self.url, allow=self._endpoint_allow, timeout=self.connect_timeout)
        except netguard.EndpointNotAllowed as exc:
            raise AddressNotAllowed(str(exc), address_class=exc.reason) from exc

    def _open(self) -> tuple[ClientConnection, dict[str, Any]]:
        try:
            sock = self._guarded_socket()
            ws = connect(
                self.url,
                sock=sock,
                additional_headers=self._headers,
                open_timeout=self.connect_timeout,
                close_timeout=2.0,
                compression=None,
                max_size=self._limits.max_frame_bytes,
                **_SYNC_QUEUE,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            reason = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
            if status in (401, 403):
                raise PolicyUnauthorized(
                    f"handshake refused with HTTP {status}: {reason}", status=status
                ) from exc
            kind = "redirect_refused" if 300 <= status < 400 else "not_websocket"
            raise PolicyUnavailable(
                f"handshake refused with HTTP {status}: {reason}", reason=kind, status=status
            ) from exc
        except TimeoutError as exc:
            raise PolicyTimeout(f"no handshake within {self.connect_timeout} s") from exc
        except ConnectionRefusedError as exc:
            raise PolicyUnavailable(f"cannot connect: {exc}", reason="refused") from exc
        except ssl.SSLError as exc:
            raise PolicyUnavailable(f"TLS handshake failed: {exc}", reason="tls_error") from exc
        except InvalidHandshake as exc:
            raise PolicyUnavailable(f"not a websocket handshake: {exc}", reason="not_websocket") from exc
        except OSError as exc:
            raise PolicyUnavailable(f"cannot connect: {exc}") from exc
        try:
            frame = ws.recv(timeout=self.connect_timeout)
        except TimeoutError as exc:
            ws.close()
            raise PolicyTimeout(f"no metadata frame within {self.connect_timeout} s") from exc
        except ConnectionClosed as exc:
            raise _closed_error(exc, "before sending its metadata") from exc
        if isinstance(frame, str):
            ws.close()
            raise PolicyError("server sent text instead of metadata", traceback=frame)
        try:
            metadata = wire.unpackb(frame, limits=self._limits)
        except wire.WireError as exc:
            ws.close()
            raise PolicyProtocolError(f"undecodable metadata frame: {exc}") from exc
        if not isinstance(metadata, dict):
            ws.close()
            raise PolicyProtocolError(f"metadata must be a map, got {type(metadata).__name__}")
        return ws, metadata

    def close(self) -> None:
        """Close the websocket (normal closure). Idempotent; a later call reconnects."""
        if self._ws is not None:
            ws, self._ws = self._ws, None
            ws.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------------------------

    @property
    def needs_session_id(self) -> bool:
        """Whether the server's metadata asks for ``session_id`` in every observation. The client's
        ``session_id`` (naming the evaluation episode) is then added to each, and :meth:`reset` always carries
        it in ``reset_info``."""
        return self.metadata.get("needs_session_id") is True

    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """Send one observation, return the reply dict with ``actions`` validated as an ``(H, D)`` array.

        ``session_id`` is added when the server asks for it and this client was given one.
        """
        request = dict(obs)
        if self.session_id is not None and self.needs_session_id:
            request.setdefault("session_id", self.session_id)
        if self.dialect != "openpi":
            request["endpoint"] = "infer"
        frame = wire.packb(request)
        if self._ws is None:
            self._connect()  # outside the timed round trip
        started = time.perf_counter()
        reply = self._exchange(frame)
        if isinstance(reply, str):
            self.close()
            raise PolicyError("policy server failed", traceback=reply)
        result = self._decode(reply)
        self.latencies_ms.append((time.perf_counter() - started) * 1e3)
        result["actions"] = validate_actions(result, action_dim=self.action_dim)
        return result

    def reset(self, reset_info: Mapping[str, Any] | None = None) -> None:
        """Tell the policy a new episode starts (a no-op for the openpi dialect, which has no reset).

        The request is ``reset_info`` plus ``session_id`` (when this client has one), as RoboArena's evaluator
        sends it: its server hands the request, less ``endpoint``, to the policy's ``reset``.
        """
        if self.dialect == "openpi":
            return
        info = dict(reset_info or {})
        if self.session_id is not None:
            info.setdefault("session_id", self.session_id)
        reply = self._exchange(wire.packb({**info, "endpoint": "reset"}))
        if isinstance(reply, str):
            if self.dialect == "roboarena" and reply.strip() == ROBOARENA_RESET_REPLY:
                return
            self.close()
            raise PolicyError("policy server failed to reset", traceback=reply)
        self._decode(reply)

    def latency(self) -> LatencyStats:
        """Mean, median and 99th percentile of :attr:`latencies_ms`."""
        return LatencyStats.of(self.latencies_ms)

    def _exchange(self, frame: bytes) -> str | bytes:
        ws = self._ws if self._ws is not None else self._connect()
        try:
            ws.send(frame)
            return ws.recv(timeout=self.request_timeout)
        except TimeoutError as exc:
            self.close()
            raise PolicyTimeout(f"no reply within {self.request_timeout} s") from exc
        except ConnectionClosed as exc:
            self._ws = None
            raise _closed_error(exc, "mid-request") from exc

    def _decode(self, reply: bytes) -> dict[str, Any]:
        try:
            result = wire.unpackb(reply, limits=self._limits)
        except wire.WireError as exc:
            self.close()
            raise PolicyProtocolError(f"undecodable reply: {exc}") from exc
        if not isinstance(result, dict):
            self.close()
            raise PolicyProtocolError(f"a reply must be a map, got {type(result).__name__}")
        return result


def _closed_error(exc: ConnectionClosed, when: str) -> PolicyClientError:
    if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG and exc.rcvd_then_sent is not True:
        # We closed first: the server's frame was over our limits (websockets refuses it unread).
        return PolicyProtocolError(f"server sent a frame over our size limit {when}")
    code = exc.rcvd.code if exc.rcvd is not None else CloseCode.ABNORMAL_CLOSURE
    reason = exc.rcvd.reason if exc.rcvd is not None else ""
    if code == CloseCode.INTERNAL_ERROR:
        return PolicyError(f"policy server closed with 1011 {when}: {reason}")
    if code == CloseCode.MESSAGE_TOO_BIG:
        return PolicyError(f"policy server refused a frame as too big {when}: {reason}")
    return PolicyUnavailable(
        f"connection lost {when} (close code {int(code)}): {reason}".rstrip(": "),
        reason="closed",
        close_code=int(code),
    )
