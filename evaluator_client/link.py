"""The evaluator's connection to a policy through the blind relay, and whose fault it is when it fails.

A policy is at fault only for what the policy itself did: an error it reported (text frame, close 1011), no
reply within the request timeout, a reply that breaks the protocol or holds invalid actions, or a server the
relay could not reach or that dropped its side (the relay then closes with 1014, "policy unavailable").
Everything else is the link's: the relay going away (close 1001, or 1006 without a closing handshake), a relay
that refuses connections or is unreachable, a relay that cannot ask the arena (handshake 503, close 1013), a
closed session (close 1008) or a refused token. Such a loss is retried once with a reconnect (the lost request
is sent again on the new connection); if that fails too, :class:`~evaluator_client.episode.LinkLost` says so,
and the session is aborted with the ``infrastructure`` fault.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from evaluator_client.episode import LinkLost
from policy_server.client import PolicyClient, PolicyClientError, PolicyUnavailable

logger = logging.getLogger(__name__)

POLICY_UNAVAILABLE_CLOSE = 1014
"""The relay's close code when the policy's server cannot be reached or dropped its side (bad gateway)."""

_T = TypeVar("_T")


def policy_at_fault(exc: PolicyClientError) -> bool:
    """Whether ``exc`` is the policy's own failure (see the module docstring), not the relay's or the arena's."""
    if isinstance(exc, PolicyUnavailable):
        return exc.close_code == POLICY_UNAVAILABLE_CLOSE
    return True


class RelayLink:
    """A :class:`~policy_server.client.PolicyClient` to ``url`` that tells the link's failures from the
    policy's (an ``ActionPolicy`` for :func:`~evaluator_client.episode.run_episode`).

    Connecting happens in the constructor. A policy's failure is raised as the client raised it; a lost link
    is reconnected once and the call repeated, then raised as :class:`LinkLost`. ``reconnects`` counts the
    reconnects that worked. Close it (or use it as a context manager) when the episode ends.
    """

    def __init__(self, url: str, **client_options: Any) -> None:
        self.reconnects = 0
        self.client: PolicyClient = self._retrying(lambda: PolicyClient(url, **client_options), "connecting")

    def reset(self) -> None:
        self._retrying(self.client.reset, "resetting the policy", reconnect=True)

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        return self._retrying(lambda: self.client.infer(obs), "waiting for actions", reconnect=True)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RelayLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _retrying(self, call: Callable[[], _T], doing: str, *, reconnect: bool = False) -> _T:
        try:
            return call()
        except PolicyClientError as exc:
            if policy_at_fault(exc):
                raise
            first = exc
        logger.info("link lost while %s (%s); reconnecting once", doing, first)
        try:
            if reconnect:
                self.client.connect()
            result = call()
        except PolicyClientError as exc:
            if policy_at_fault(exc):
                raise
            raise LinkLost(
                f"lost the relay while {doing} ({first}); the reconnect failed too ({exc})"
            ) from exc
        self.reconnects += 1
        return result
