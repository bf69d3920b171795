"""The relay API's dial-out directory: ``attach/`` checks the owner key and the policy's mode, the newest link
wins, ``renew`` of a replaced link is refused, ``locate/`` names the relay only while the lease lives, and
``relay/dialout/`` tells owners' servers where to connect."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from arena.models import PolicyDialout
from tests.api.actors import register_policy
from tests.api.test_relay_api import relay_client

RELAY_1, RELAY_2 = "ws://10.0.0.1:8765", "ws://10.0.0.2:8765"


def attach(
    key: str, slug: str = "dial-me", *, relay: str = RELAY_1, connection: str = "ab" * 16, renew=False
):
    body = {"policy": slug, "key": key, "relay": relay, "connection": connection, "renew": renew}
    return relay_client().post("/api/v1/relay/attach/", body, format="json")


def locate(slug: str = "dial-me"):
    return relay_client().post("/api/v1/relay/locate/", {"policy": slug}, format="json")


def test_the_owner_key_attaches_and_the_relay_is_located(owner):
    register_policy(owner, "dial-me", endpoint_url="dialout://dial-me")
    assert locate().status_code == 404
    attached = attach(owner.key)
    assert attached.status_code == 200 and attached.json()["lease_s"] > 0
    assert locate().json() == {"relay": RELAY_1}
    assert attach(owner.key, renew=True).status_code == 200


def test_keys_that_do_not_own_a_dialout_policy_get_one_answer(owner, outsider, lab1):
    register_policy(owner, "dial-me", endpoint_url="dialout://dial-me")
    register_policy(owner, "direct-me", endpoint_url="ws://10.9.8.7:9100/direct")
    refusals = [
        attach(outsider.key),
        attach(lab1.key),
        attach(owner.key[:-3] + "abc"),
        attach(owner.key, "direct-me"),
        attach(owner.key, "no-such-policy"),
    ]
    assert {(r.status_code, r.json()["error"]["code"]) for r in refusals} == {(403, "dialout_refused")}
    assert not PolicyDialout.objects.exists()


def test_the_newest_link_wins_and_the_replaced_one_cannot_renew(owner):
    register_policy(owner, "dial-me", endpoint_url="dialout://dial-me")
    assert attach(owner.key, relay=RELAY_1, connection="aa" * 16).status_code == 200
    assert attach(owner.key, relay=RELAY_2, connection="bb" * 16).status_code == 200
    assert locate().json() == {"relay": RELAY_2}
    stale = attach(owner.key, relay=RELAY_1, connection="aa" * 16, renew=True)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "superseded"


def test_a_lapsed_or_detached_link_is_not_located(owner):
    register_policy(owner, "dial-me", endpoint_url="dialout://dial-me")
    assert attach(owner.key).status_code == 200
    PolicyDialout.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert locate().status_code == 404
    assert attach(owner.key).status_code == 200
    detached = relay_client().post("/api/v1/relay/detach/", {"connection": "ab" * 16}, format="json")
    assert detached.json() == {"detached": 1}
    assert locate().status_code == 404


def test_malformed_relay_addresses_and_connections_are_refused(owner):
    register_policy(owner, "dial-me", endpoint_url="dialout://dial-me")
    assert attach(owner.key, relay="http://10.0.0.1/").status_code == 400
    assert attach(owner.key, connection="not hex").status_code == 400


def test_owners_servers_ask_the_arena_where_the_relay_is(db, settings, client):
    settings.ARENA_RELAY_URL = "wss://relay.arena.example.org"
    assert client.get("/api/v1/relay/dialout/").json() == {"relay_url": "wss://relay.arena.example.org"}
