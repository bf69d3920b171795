"""Consent and visibility over HTTP: a session's episodes appear on the public browser only once it is revealed
and both policies' owners publish their episodes; its reason only when the lab lets it (per session or by
default); its lab only as a stable pseudonym unless the lab opts in to its name."""

from __future__ import annotations

from django.test import Client

from arena.models import Policy, Trajectory, Video
from arena.selectors.public import lab_pseudonym
from tests.api.actors import lab_of, open_session
from tests.opendata.conftest import recorded_session

SECRET_REASON = "B-knocked-the-cup-over-7f3a"


def publish_all(owner) -> None:
    for policy in Policy.objects.all():
        response = owner.patch(f"/api/v1/policies/{policy.slug}/", {"videos_public": True})
        assert response.status_code == 200, response.json()


def public_pages(sid: str) -> tuple[str, int, str]:
    """(the list page's HTML, the session page's status, its HTML) for an anonymous visitor."""
    web = Client()
    listing = web.get("/sessions/")
    assert listing.status_code == 200
    page = web.get(f"/sessions/{sid}/")
    return listing.content.decode(), page.status_code, page.content.decode()


def test_nothing_is_public_while_blind_or_before_both_owners_allow(
    local_storage, pool, lab1, robot1, owner, anonymous
):
    blind = open_session(lab1)
    listing, status, _ = public_pages(blind["id"])
    assert status == 404 and blind["id"] not in listing

    sid = recorded_session(lab1, reason=SECRET_REASON, reason_public=True)
    listing, status, _ = public_pages(sid)
    assert status == 404 and sid not in listing and SECRET_REASON not in listing
    for video in Video.objects.filter(session_id=sid):
        assert anonymous.get(f"/api/v1/videos/{video.id}/").status_code == 404
    for trajectory in Trajectory.objects.filter(session_id=sid):
        assert anonymous.get(f"/api/v1/trajectories/{trajectory.id}/").status_code == 404

    # One owner allowing is not enough: the session shows both policies' episodes.
    session = Trajectory.objects.filter(session_id=sid).first().session
    owner.patch(f"/api/v1/policies/{session.policy_a.slug}/", {"videos_public": True})
    listing, status, _ = public_pages(sid)
    assert status == 404 and sid not in listing

    owner.patch(f"/api/v1/policies/{session.policy_b.slug}/", {"videos_public": True})
    listing, status, html = public_pages(sid)
    assert status == 200 and sid in listing and SECRET_REASON in html
    for trajectory in Trajectory.objects.filter(session_id=sid):
        body = anonymous.get(f"/api/v1/trajectories/{trajectory.id}/").json()
        assert body["url"]


def test_reasons_are_published_only_when_the_lab_lets_them(local_storage, pool, lab1, robot1, owner):
    publish_all(owner)
    private = recorded_session(lab1, reason=SECRET_REASON)  # the lab's default: private
    _, status, html = public_pages(private)
    assert status == 200 and SECRET_REASON not in html and 'id="reason-private"' in html

    said_no = recorded_session(lab1, reason=SECRET_REASON + "-no", reason_public=False)
    assert lab1.patch("/api/v1/lab/", {"publish_reasons": True}).json()["publish_reasons"] is True
    by_default = recorded_session(lab1, reason=SECRET_REASON + "-default")
    _, _, html = public_pages(by_default)
    assert SECRET_REASON + "-default" in html
    _, _, html = public_pages(said_no)  # the session's own answer wins over the later default
    assert SECRET_REASON not in html
    _, _, html = public_pages(private)  # a new default does not publish what was submitted private
    assert SECRET_REASON not in html


def test_labs_are_pseudonymous_unless_they_opt_in(local_storage, pool, lab1, robot1, owner):
    publish_all(owner)
    sid = recorded_session(lab1)
    lab = lab_of(lab1)
    setting = lab1.get("/api/v1/lab/").json()
    assert setting["pseudonym"] == lab_pseudonym(lab.pk) and setting["publish_name"] is False
    assert lab_pseudonym(lab.pk) == lab_pseudonym(lab.pk) != lab_pseudonym(lab.pk + 1)
    listing, _, html = public_pages(sid)
    for text in (listing, html):
        assert lab.name not in text and lab.slug not in text and lab.organization.name not in text
        assert setting["pseudonym"] in text
    lab1.patch("/api/v1/lab/", {"publish_name": True})
    listing, _, html = public_pages(sid)
    assert lab.name in listing and lab.name in html


def test_the_lab_setting_is_the_labs_own(local_storage, pool, lab1, owner, anonymous):
    assert owner.patch("/api/v1/lab/", {"publish_reasons": True}).status_code == 403
    assert anonymous.get("/api/v1/lab/").status_code in (401, 403)
