"""``arena.ports``: ports for servers started by tests, ``make serve`` and the SeaweedFS launcher."""

from __future__ import annotations

import socket

import pytest

from arena.ports import ephemeral_range, free_ports


def test_ports_are_distinct_bindable_outside_the_ephemeral_range_and_avoid_what_is_promised(monkeypatch):
    monkeypatch.delenv("ARENA_PORT_RANGE", raising=False)  # the default range, not a worker's or a helper's
    low, _ = ephemeral_range()
    promised = set(free_ports(40))
    assert len(promised) == 40
    more = free_ports(40, avoid=promised)
    assert len(set(more)) == 40 and not promised & set(more)
    for port in promised | set(more):
        assert port < low
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", more[0]))  # free, as promised


def test_a_configured_range_confines_every_pick(monkeypatch):
    monkeypatch.setenv("ARENA_PORT_RANGE", "21000-21099")
    ports = free_ports(30)
    assert all(21000 <= port <= 21099 for port in ports) and len(set(ports)) == 30


def test_a_malformed_range_is_named(monkeypatch):
    monkeypatch.setenv("ARENA_PORT_RANGE", "lots")
    with pytest.raises(ValueError, match="ARENA_PORT_RANGE"):
        free_ports(1)
