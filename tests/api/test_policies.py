"""Policies: owners register, update and retire; everyone reads the public list."""

from arena.models import Policy, PolicyCheck
from arena.services.policies import policy_check_record
from tests.api.actors import activate, register_policy


def test_owner_registers_a_pending_policy(owner):
    body = register_policy(
        owner, "my-policy", endpoint_url="wss://gpu.acme.example:9000/ws", open_weights=True
    )
    assert body["status"] == "pending"
    assert body["organization"] == "Acme Robotics"
    assert body["endpoint_url"] == "wss://gpu.acme.example:9000/ws"
    assert Policy.objects.get(slug="my-policy").owner.username == "olivia"


def test_registration_validation(owner):
    bad_url = owner.post("/api/v1/policies/", {"slug": "p1p", "name": "P", "endpoint_url": "http://x:1"})
    assert (bad_url.status_code, bad_url.json()["error"]["field"]) == (400, "endpoint_url")
    bad_slug = owner.post(
        "/api/v1/policies/", {"slug": "Not A Slug", "name": "P", "endpoint_url": "ws://x:1"}
    )
    assert (bad_slug.status_code, bad_slug.json()["error"]["field"]) == (400, "slug")
    register_policy(owner, "taken")
    dup = owner.post("/api/v1/policies/", {"slug": "taken", "name": "P", "endpoint_url": "ws://x:1"})
    assert (dup.status_code, dup.json()["error"]["code"]) == (409, "slug_taken")
    other_org = owner.post(
        "/api/v1/policies/",
        {"slug": "p2p", "name": "P", "endpoint_url": "ws://x:1", "organization": "Outsider Inc"},
    )
    assert other_org.status_code in (403, 404)


def test_labs_and_anonymous_cannot_register(lab1, anonymous):
    body = {"slug": "sneaky", "name": "S", "endpoint_url": "ws://x:1"}
    assert lab1.post("/api/v1/policies/", body).status_code == 403
    assert anonymous.post("/api/v1/policies/", body).status_code == 401


def test_public_list_hides_endpoints_and_pending(owner, anonymous, pool):
    register_policy(owner, "still-pending")
    listed = anonymous.get("/api/v1/policies/").json()
    assert [p["slug"] for p in listed] == ["diffusion-droid", "octo-droid", "pi0-fast-droid"]
    assert all("endpoint_url" not in p for p in listed)
    assert anonymous.get("/api/v1/policies/still-pending/").status_code == 404
    assert "endpoint_url" not in anonymous.get("/api/v1/policies/octo-droid/").json()
    assert owner.get("/api/v1/policies/octo-droid/").json()["endpoint_url"].startswith("ws://")
    mine = owner.get("/api/v1/policies/?mine=1").json()
    assert "still-pending" in [p["slug"] for p in mine]


def test_update_and_retire_only_by_owner(owner, outsider, pool):
    assert outsider.patch("/api/v1/policies/octo-droid/", {"name": "Hacked"}).status_code == 404
    assert outsider.post("/api/v1/policies/octo-droid/retire/").status_code == 404
    updated = owner.patch("/api/v1/policies/octo-droid/", {"description": "v2 weights"})
    assert updated.json()["description"] == "v2 weights"
    assert updated.json()["status"] == "active"
    unlabelled = owner.patch("/api/v1/policies/octo-droid/", {"endpoint_url": "ws://new-host:1234"})
    assert unlabelled.json()["error"]["code"] == "version_label_required"
    # The same (here: empty) version on another server: the same row, back to pending until it is checked.
    Policy.objects.filter(slug="octo-droid").update(version_label="octo-1")
    moved = owner.patch(
        "/api/v1/policies/octo-droid/", {"endpoint_url": "ws://new-host:1234", "version_label": "octo-1"}
    )
    assert moved.json()["status"] == "pending" and moved.json()["slug"] == "octo-droid"
    retired = owner.post("/api/v1/policies/octo-droid/retire/")
    assert retired.json()["status"] == "retired" and retired.json()["retired_at"]
    assert owner.patch("/api/v1/policies/octo-droid/", {"name": "x"}).status_code == 409


def test_health_checks_drive_status(settings, owner, pool):
    settings.ARENA_CHECK_FAILURES_BEFORE_FAILING = 2
    policy = Policy.objects.get(slug="octo-droid")
    policy_check_record(policy=policy, ok=False, error_code="connect_failed", message="refused")
    assert Policy.objects.get(slug="octo-droid").status == "active"
    policy_check_record(policy=policy, ok=False, error_code="connect_failed", message="refused")
    assert Policy.objects.get(slug="octo-droid").status == "failing"
    activate("octo-droid")
    assert Policy.objects.get(slug="octo-droid").status == "active"
    checks = owner.get("/api/v1/policies/octo-droid/checks/").json()
    assert [c["ok"] for c in checks] == [True, False, False, True]
    assert PolicyCheck.objects.filter(policy=policy).count() == 4


def test_requirements_come_from_the_check(owner):
    register_policy(owner, "two-cam")
    activate(
        "two-cam",
        {
            "image_resolution": [180, 320],
            "n_external_cameras": 2,
            "needs_wrist_camera": False,
            "needs_stereo_camera": False,
            "action_space": "cartesian_velocity",
            "action_dim": 7,
            "action_horizon": 15,
        },
    )
    req = owner.get("/api/v1/policies/two-cam/").json()["requirements"]
    assert req["image_resolution"] == [180, 320]
    assert req["n_external_cameras"] == 2 and req["action_space"] == "cartesian_velocity"
