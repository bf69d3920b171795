"""Public requirements say only which robot classes can run a policy; the exact ones (resolution, cameras,
action space, dimension, horizon), which would fingerprint a policy against a lab's slots, go only to the
policy's owners and, for its own slots, to the lab."""

from __future__ import annotations

from tests.api.actors import DROID_REQS, open_session

COARSE = {"platform": None, "needs_replica_state": False}


def test_the_public_list_and_detail_show_robot_classes_only(pool, anonymous, lab1):
    listed = anonymous.get("/api/v1/policies/").json()
    assert [p["requirements"] for p in listed] == [COARSE] * len(pool)
    assert anonymous.get(f"/api/v1/policies/{pool[0].slug}/").json()["requirements"] == COARSE
    assert lab1.get(f"/api/v1/policies/{pool[0].slug}/").json()["requirements"] == COARSE


def test_owners_and_the_labs_own_slots_see_exact_requirements(pool, owner, lab1, robot1):
    mine = owner.get("/api/v1/policies/?mine=1").json()
    assert all(p["requirements"]["image_resolution"] == DROID_REQS["image_resolution"] for p in mine)
    assert owner.get(f"/api/v1/policies/{pool[0].slug}/").json()["requirements"]["action_horizon"] == 10
    slots = open_session(lab1)["slots"]
    for slot in ("A", "B"):
        shown = slots[slot]["requirements"]
        assert {k: shown[k] for k in DROID_REQS} == DROID_REQS
