"""A policy's public page: identity and health, records, lab shares, score history and session videos."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from django.test import Client

from arena.models import EvaluationSession, Policy, Preference, RankingSnapshot
from arena.storage import LocalStorage, get_storage
from tests.api.actors import activate, open_session, register_policy, register_robot, report_both
from tests.videos.videohelpers import BODY, declare, upload
from tests.web.conftest import PASSWORD, person


def html_of(path: str, client: Client | None = None) -> str:
    response = (client or Client()).get(path)
    assert response.status_code == 200
    return response.content.decode()


def signed_in(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


def test_unknown_and_pending_policies_have_no_page(owner, settings):
    settings.ARENA_CHECK_ON_REGISTER = False
    register_policy(owner, "still-pending")
    assert Client().get("/policies/still-pending/").status_code == 404
    assert Client().get("/policies/no-such-policy/").status_code == 404


def outcomes(slug: str, key) -> dict[str, Counter]:
    """W/L/T of ``slug`` grouped by ``key(preference, opponent slug)``, from the stored preferences."""
    result: dict[str, Counter] = {}
    for p in Preference.objects.filter(valid=True).select_related("policy_a", "policy_b"):
        if slug not in (p.policy_a.slug, p.policy_b.slug):
            continue
        mine = "A" if p.policy_a.slug == slug else "B"
        opponent = p.policy_b.slug if mine == "A" else p.policy_a.slug
        outcome = "T" if p.choice == "tie" else "W" if p.choice == mine else "L"
        result.setdefault(key(p, opponent), Counter())[outcome] += 1
    return result


@pytest.fixture
def duel(settings, owner, lab1, lab2):
    """Two Acme policies, so every session pairs them; both labs have a robot."""
    settings.ARENA_CHECK_ON_REGISTER = False
    for slug in ("acme-one", "acme-two"):
        register_policy(owner, slug)
        activate(slug)
    register_robot(lab1)
    register_robot(lab2)


def decide(lab, choice: str = "A") -> str:
    session = open_session(lab)
    report_both(lab, session["id"])
    assert (
        lab.post(
            f"/api/v1/sessions/{session['id']}/preference/", {"choice": choice, "reason": "r"}
        ).status_code
        == 201
    )
    return session["id"]


def test_a_lab_over_the_share_cap_is_flagged(duel, lab1, settings):
    settings.ARENA_LAB_MAX_SHARE = 0.5
    decide(lab1)
    decide(lab1)
    html = html_of("/policies/acme-one/")
    assert 'id="lab-share-warning"' in html and "100%" in html


def test_balanced_labs_are_not_flagged(duel, lab1, lab2, settings):
    settings.ARENA_LAB_MAX_SHARE = 0.5
    decide(lab1)
    decide(lab2)
    html = html_of("/policies/acme-one/")
    assert 'id="lab-share-warning"' not in html
    assert html.count("50% (1)") == 2


@pytest.fixture
def local_videos(settings, tmp_path) -> LocalStorage:
    for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        setattr(settings, name, "")
    settings.VIDEO_DIR = tmp_path / "videos"
    storage = get_storage()
    storage.ensure_bucket()
    return storage


def record_video(lab, session_id: str) -> str:
    started = declare(lab, session_id).json()
    upload(started["upload"], BODY)
    assert lab.post(f"/api/v1/videos/{started['id']}/finish/").json()["state"] == "verified"
    return started["id"]


def test_videos_show_to_whoever_the_video_rule_allows(local_videos, duel, owner, lab1, outsider):
    session = open_session(lab1)
    report_both(lab1, session["id"])
    record_video(lab1, session["id"])
    for username, lab in (("olivia", None), ("lena", "Berkeley Lab"), ("oscar", None)):
        person(username, lab=lab)

    def sees_video(client: Client | None = None) -> bool:
        return "<video" in html_of("/policies/acme-one/", client)

    assert not sees_video(signed_in("olivia")), "blind: not even the owner"
    assert (
        lab1.post(f"/api/v1/sessions/{session['id']}/preference/", {"choice": "B", "reason": "r"}).status_code
        == 201
    )
    assert sees_video(signed_in("olivia")) and sees_video(signed_in("lena"))
    assert not sees_video() and not sees_video(signed_in("oscar"))
    Policy.objects.filter(slug__in=["acme-one", "acme-two"]).update(videos_public=True)
    html = html_of("/policies/acme-one/")
    stored = EvaluationSession.objects.get(pk=session["id"])
    outcome = "lost" if stored.policy_a.slug == "acme-one" else "won"  # the lab preferred slot B
    assert "<video" in html and "/files/videos/" in html and f"acme-two</a>: {outcome}" in html


class TestTheLeaguesPolicyPages:
    """Policy pages of the league. The league is built once for the class (see tests/web/conftest.py)."""

    def test_header_shows_identity_and_last_health_check_but_not_the_endpoint(self, league):
        html = html_of("/policies/beta-act/")
        policy = Policy.objects.get(slug="beta-act")
        assert policy.name in html and "Beta Robotics" in html and "MIT" in html
        assert 'id="policy-status">active<' in html
        assert "passed" in html and "under 50 ms" in html
        assert policy.endpoint_url not in html

    def test_score_and_rank_come_from_the_newest_snapshot(self, league):
        row = next(
            r
            for r in RankingSnapshot.objects.order_by("-version").first().ratings
            if r["slug"] == "atlas-vla"
        )
        html = html_of("/policies/atlas-vla/")
        assert f'id="policy-score">{round(row["score"])}<' in html
        assert f'id="policy-rank">{row["rank"]}' in html

    def test_record_against_each_opponent_counts_every_verdict(self, league):
        expected = outcomes("pi0-fast-droid", lambda p, opponent: opponent)
        html = html_of("/policies/pi0-fast-droid/")
        rows = re.findall(
            r'<tr data-opponent="([a-z0-9-]+)">.*?<td class="num">(\d+)</td><td class="num">(\d+)</td>'
            r'<td class="num">(\d+)</td><td class="num">(\d+)</td><td class="num">(\d+)%</td>',
            html,
            re.S,
        )
        shown = {slug: tuple(map(int, numbers)) for slug, *numbers in rows}
        assert {slug: (won, lost, tied) for slug, (won, lost, tied, _, _) in shown.items()} == {
            slug: (c["W"], c["L"], c["T"]) for slug, c in expected.items()
        }
        for won, lost, tied, total, pct in shown.values():
            assert total == won + lost + tied
            assert pct == round(100 * (won + tied / 2) / total)

    def test_record_by_task_category_with_category_scores(self, league):
        expected = outcomes("diffusion-droid", lambda p, opponent: p.task_category)
        html = html_of("/policies/diffusion-droid/")
        section = html[html.index('id="categories"') : html.index('id="lab-shares"')]
        for category, c in expected.items():
            assert re.search(
                rf"<td>{category}</td><td class=\"num\">{c['W']}</td><td class=\"num\">{c['L']}</td>"
                rf"<td class=\"num\">{c['T']}</td>",
                section,
            ), category
        breakdowns = RankingSnapshot.objects.order_by("-version").first().breakdowns
        for entry in breakdowns.values():
            assert str(round(entry["scores"]["diffusion-droid"]["score"])) in section

    def test_lab_shares_are_anonymous_except_for_staff(self, league):
        public = html_of("/policies/octo-droid/")
        assert "Lab 1" in public and "Lab 2" in public
        assert "Berkeley" not in public and "Stanford" not in public
        person("sam", staff=True)
        staff = html_of("/policies/octo-droid/", signed_in("sam"))
        assert "Berkeley Lab" in staff and "Stanford Lab" in staff

    def test_score_history_has_a_point_per_snapshot_rating_the_policy(self, league):
        rated = [
            s
            for s in RankingSnapshot.objects.order_by("version")
            if any(r["slug"] == "rt1-droid" for r in s.ratings)
        ]
        html = html_of("/policies/rt1-droid/")
        svg = re.search(r'<svg[^>]*id="score-history".*?</svg>', html, re.S).group(0)
        assert svg.count('class="history-point"') == len(rated) >= 1
        assert "<desc" in svg
