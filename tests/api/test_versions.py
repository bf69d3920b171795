"""Policy versions: a new version is a new rating row linked to the old one, which is retired with its results."""

from arena.models import EvaluationSession, Policy, Preference, RankingSnapshot
from arena.services.ranking import ranking_snapshot_create
from tests.api.actors import activate, open_session, register_policy, report_both


def play(lab) -> EvaluationSession:
    session = open_session(lab)
    report_both(lab, session["id"])
    response = lab.post(f"/api/v1/sessions/{session['id']}/preference/", {"choice": "A", "reason": "r"})
    assert response.status_code == 201, response.json()
    return EvaluationSession.objects.get(pk=session["id"])


def comparisons_of(slug: str) -> int:
    row = next(
        (r for r in RankingSnapshot.objects.order_by("-version").first().ratings if r["slug"] == slug), None
    )
    return row["n_comparisons"] if row else 0


def test_registration_declares_a_version(owner, anonymous):
    body = register_policy(owner, "pi-ckpt", version_label="ckpt-30000", weights_hash="sha256:ab12")
    assert (body["version_label"], body["weights_hash"], body["version_number"]) == (
        "ckpt-30000",
        "sha256:ab12",
        1,
    )
    assert body["previous_version"] is None and body["next_version"] is None
    bad = owner.post(
        "/api/v1/policies/",
        {"slug": "bad-label", "name": "x", "endpoint_url": "ws://10.1.1.1:9/x", "version_label": "a\nb"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_version"


def test_a_new_version_gets_its_own_rating_row_and_the_old_keeps_its_results(
    settings, owner, lab1, robot1, pool, anonymous
):
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 100
    for _ in range(6):
        play(lab1)
    ranking_snapshot_create()
    old_count = comparisons_of("octo-droid")
    assert (
        old_count
        == Preference.objects.filter(policy_a__slug="octo-droid").count()
        + Preference.objects.filter(policy_b__slug="octo-droid").count()
    )

    # A new endpoint needs a label; a new label makes a new version.
    assert (
        owner.patch("/api/v1/policies/octo-droid/", {"endpoint_url": "ws://10.2.2.2:9000"}).status_code == 400
    )
    response = owner.patch(
        "/api/v1/policies/octo-droid/",
        {"endpoint_url": "ws://10.2.2.2:9000", "version_label": "octo-ft-2", "weights_hash": "sha256:ff00"},
    )
    assert response.status_code == 200, response.json()
    new = response.json()
    assert new["slug"] == "octo-droid-v2" and new["status"] == "pending"
    assert (new["version_number"], new["previous_version"], new["version_label"]) == (
        2,
        "octo-droid",
        "octo-ft-2",
    )
    assert new["endpoint_url"] == "ws://10.2.2.2:9000" and new["license"] == "MIT"
    old = anonymous.get("/api/v1/policies/octo-droid/").json()
    assert old["status"] == "retired" and old["next_version"] == "octo-droid-v2"
    # A retired version cannot be changed; the error names its successor.
    again = owner.patch("/api/v1/policies/octo-droid/", {"version_label": "octo-ft-3"})
    assert again.status_code == 409 and "octo-droid-v2" in again.json()["error"]["message"]

    activate("octo-droid-v2")
    for _ in range(6):
        session = play(lab1)
        # the session (and its comparison) records the version that ran; the retired one is never assigned
        assert "octo-droid" not in (session.policy_a.slug, session.policy_b.slug)
    ranking_snapshot_create()
    assert comparisons_of("octo-droid") == old_count
    v2 = Policy.objects.get(slug="octo-droid-v2")
    assert (
        comparisons_of("octo-droid-v2")
        == Preference.objects.filter(policy_a=v2).count() + Preference.objects.filter(policy_b=v2).count()
    )
    statuses = {r["slug"]: r["status"] for r in RankingSnapshot.objects.order_by("-version").first().ratings}
    assert statuses["octo-droid"] == "retired"

    page = anonymous.client.get("/policies/octo-droid-v2/").content.decode()
    history = page[page.index('id="versions"') : page.index('id="opponents"')]
    assert "octo-ft-2" in history and 'data-version="octo-droid"' in history and "retired" in history


def test_same_label_on_a_new_endpoint_is_the_same_version(owner, pool):
    Policy.objects.filter(slug="diffusion-droid").update(version_label="dp-1")
    moved = owner.patch(
        "/api/v1/policies/diffusion-droid/", {"endpoint_url": "ws://10.3.3.3:1", "version_label": "dp-1"}
    )
    assert moved.status_code == 200 and moved.json()["slug"] == "diffusion-droid"
    assert Policy.objects.filter(slug__startswith="diffusion-droid").count() == 1


def test_a_third_version_links_to_the_first(owner, pool):
    owner.patch("/api/v1/policies/pi0-fast-droid/", {"version_label": "b"})
    third = owner.patch("/api/v1/policies/pi0-fast-droid-v2/", {"version_label": "c"}).json()
    assert third["slug"] == "pi0-fast-droid-v3" and third["previous_version"] == "pi0-fast-droid-v2"
    assert Policy.objects.get(slug="pi0-fast-droid-v3").family.slug == "pi0-fast-droid"
