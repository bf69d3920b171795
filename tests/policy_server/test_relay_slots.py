"""A standalone relay (no arena) still admits one connection per session slot at a time."""

from __future__ import annotations

import time

import pytest
from arena_test_policies import EchoPolicy
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from policy_server.relay import serve_relay_in_thread
from policy_server.relay_token import mint_token
from policy_server.server import serve_in_thread

SECRET = "relay secret shared with the arena server"


def test_a_second_concurrent_connection_on_a_slot_is_refused():
    with serve_in_thread(EchoPolicy()) as policy, serve_relay_in_thread(SECRET) as relay:
        token = mint_token(endpoint=policy.url, session_id="s-1", slot="A", key=SECRET, ttl_s=60)
        other_slot = mint_token(endpoint=policy.url, session_id="s-1", slot="B", key=SECRET, ttl_s=60)
        first = connect(f"{relay.url}/{token}", open_timeout=30)
        first.recv(timeout=30)
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{relay.url}/{token}", open_timeout=30)
        assert refused.value.response.status_code == 409
        with connect(f"{relay.url}/{other_slot}", open_timeout=30) as second:
            assert isinstance(second.recv(timeout=30), bytes)
        first.close()
        deadline = time.monotonic() + 30
        while True:  # free again once the relay has seen the close
            try:
                connect(f"{relay.url}/{token}", open_timeout=30).close()
                break
            except InvalidStatus as busy:
                assert busy.response.status_code == 409 and time.monotonic() < deadline
                time.sleep(0.05)
