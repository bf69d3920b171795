"""The public session page in Chromium: one control per camera drives both videos. After a seek both report the
same position; play starts both and pause stops both. Every wait is on a page condition, none on the clock."""

from __future__ import annotations

from arena.models import Policy
from tests.api.actors import activate, make_actor, register_policy, register_robot
from tests.browser.conftest import screenshot
from tests.opendata.conftest import mp4, recorded_session

BOTH = "Array.from(document.querySelectorAll('.sync-group video'))"


def wait_until(page, condition: str, *, polls: int = 600) -> None:
    """Poll ``condition`` (a JS expression) every 100 ms until it holds, at most ``polls`` times. Playwright's
    ``wait_for_function`` evaluates strings with ``new Function``, which the site's CSP (rightly) forbids."""
    for _ in range(polls):
        if page.evaluate(f"() => Boolean({condition})"):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"never true: {condition}")


def test_one_control_drives_both_videos(live_server, transactional_db, settings, tmp_path, page):
    settings.ARENA_CHECK_ON_REGISTER = False
    settings.ARENA_PUBLIC_URL = live_server.url
    for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        setattr(settings, name, "")
    settings.VIDEO_DIR = tmp_path / "videos"
    owner = make_actor("owner", owner="olivia", organization="Acme Robotics")
    lab = make_actor("lab1", lab="Berkeley Lab", organization="Berkeley")
    for slug in ("pi0-fast-droid", "diffusion-droid"):
        register_policy(owner, slug, endpoint_url=f"ws://policy-host.acme.example:{8100 + len(slug)}")
        activate(slug)
    Policy.objects.update(videos_public=True)
    register_robot(lab)
    videos = {"A": mp4(tmp_path, "a", 40), "B": mp4(tmp_path, "b", 30)}  # 4 s and 3 s
    sid = recorded_session(lab, videos=videos)

    page.goto(f"/sessions/{sid}/")
    wait_until(page, f"{BOTH}.length === 2 && {BOTH}.every(v => v.readyState >= 1)")
    durations = page.evaluate(f"{BOTH}.map(v => v.duration)")
    assert durations[0] > durations[1] > 2

    page.locator(".sync-seek").fill("500")  # half of the shorter video
    wait_until(page, f"{BOTH}.every(v => !v.seeking && v.currentTime > 0)")
    positions = page.evaluate(f"{BOTH}.map(v => v.currentTime)")
    assert positions[0] == positions[1]
    assert abs(positions[0] - durations[1] / 2) < 0.2

    page.click(".sync-play")
    wait_until(page, f"{BOTH}.every(v => !v.paused)")
    assert page.locator(".sync-play").inner_text() == "Pause"
    page.click(".sync-play")
    wait_until(page, f"{BOTH}.every(v => v.paused)")
    assert page.locator(".sync-play").inner_text() == "Play"

    page.locator(".sync-seek").fill("100")
    wait_until(
        page,
        f"{BOTH}.every(v => !v.seeking) && {BOTH}[0].currentTime === {BOTH}[1].currentTime "
        f"&& {BOTH}[0].currentTime < 1",
    )
    assert page.locator("svg.trajectory-plot polyline.gripper-trace").count() == 2
    screenshot(page, "session-page")
