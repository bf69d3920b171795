"""The public session browser over HTTP: filters (policy, task category, robot type, date), newest first,
pagination, and a session page with both episodes' videos per camera, the verdict, the scene and an SVG plot of
both trajectories."""

from __future__ import annotations

import re
from datetime import timedelta

from django.test import Client
from django.utils import timezone

from arena.models import EvaluationSession, Robot
from tests.opendata.conftest import recorded_session
from tests.opendata.test_consent import publish_all


def listed(query: str = "") -> list[str]:
    html = Client().get(f"/sessions/{query}").content.decode()
    return re.findall(r'href="/sessions/([0-9a-f-]{36})/"', html)


def test_filters_order_and_pages(local_storage, pool, lab1, robot1, owner, settings):
    publish_all(owner)
    ids = [recorded_session(lab1) for _ in range(3)]
    now = timezone.now()
    for k, sid in enumerate(ids):  # ended one day apart, the first one oldest
        EvaluationSession.objects.filter(pk=sid).update(
            ended_at=now - timedelta(days=3 - k), task_category="pick-place" if k else "wipe"
        )
    assert listed() == list(reversed(ids))
    assert listed("?category=wipe") == [ids[0]]
    assert listed("?robot=real") == list(reversed(ids))  # franka-1 is a DROID robot
    assert listed("?robot=replica") == []
    Robot.objects.update(platform="replica:tabletop-v1")
    assert listed("?robot=replica") == list(reversed(ids))
    day = (now - timedelta(days=2)).date().isoformat()
    assert listed(f"?since={day}&until={day}") == [ids[1]]
    assert listed("?since=not-a-date") == list(reversed(ids))  # malformed filters are ignored
    slug = EvaluationSession.objects.get(pk=ids[0]).policy_a.slug
    newest_first = EvaluationSession.objects.filter(pk__in=ids).order_by("-ended_at")
    expected = [str(s.id) for s in newest_first if slug in (s.policy_a.slug, s.policy_b.slug)]
    assert listed(f"?policy={slug}") == expected and ids[0] in expected
    assert listed("?policy=nobody") == []

    from arena.web import sessions as pages

    settings_size = pages.PAGE_SIZE
    pages.PAGE_SIZE = 2
    try:
        assert listed() == [ids[2], ids[1]]
        assert listed("?page=2") == [ids[0]]
        html = Client().get("/sessions/?category=pick-place").content.decode()
        assert "Page 1 of 1" in html
    finally:
        pages.PAGE_SIZE = settings_size


def test_session_page_shows_both_episodes(local_storage, pool, lab1, robot1, owner):
    publish_all(owner)
    sid = recorded_session(lab1, reason="A was steadier", reason_public=True)
    session = EvaluationSession.objects.get(pk=sid)
    html = Client().get(f"/sessions/{sid}/").content.decode()
    assert html.count("<video") == 2 and 'data-slot="A"' in html and 'data-slot="B"' in html
    assert html.count('class="sync-group"') == 1  # one camera: wrist
    assert 'id="progress-a">80<' in html and 'id="progress-b">40<' in html
    assert 'id="choice">A<' in html and "A was steadier" in html
    assert session.policy_a.slug in html and session.policy_b.slug in html
    assert html.count('class="joint-trace"') == 14  # 7 joints x 2 episodes
    assert html.count('class="gripper-trace"') == 2
    assert '<script src="/static/arena/sync.js" defer>' in html
    assert "<script>" not in html  # the CSP allows no inline script


def test_policy_page_links_its_sessions(pool, owner):
    slug = pool[0].slug
    html = Client().get(f"/policies/{slug}/").content.decode()
    assert f'href="/sessions/?policy={slug}"' in html


def test_local_video_downloads_answer_range_requests(local_storage, pool, lab1, robot1, owner):
    """Browsers seek in a video with range requests; local storage answers them as S3 does."""
    from urllib.parse import urlparse

    from tests.videos.videohelpers import BODY

    publish_all(owner)
    sid = recorded_session(lab1)
    video = EvaluationSession.objects.get(pk=sid).videos.first()
    url = urlparse(Client().get(f"/api/v1/videos/{video.id}/").json()["url"]).path
    part = Client().get(url, HTTP_RANGE="bytes=100-199")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 100-199/{len(BODY)}"
    assert b"".join(part.streaming_content) == BODY[100:200]
    tail = Client().get(url, HTTP_RANGE="bytes=-10")
    assert b"".join(tail.streaming_content) == BODY[-10:]
    assert Client().get(url, HTTP_RANGE=f"bytes={len(BODY)}-").status_code == 416
    whole = Client().get(url, HTTP_RANGE="items=1-2")
    assert whole.status_code == 200 and b"".join(whole.streaming_content) == BODY
