"""The operator screen in Chromium, driving a whole replica session through the real ``arena-eval run`` (a
subprocess) against a live arena and relay: scene not ready then ready, the live cameras and step counter, Stop,
the rating form, the reveal, Finish. Screenshots: test-artifacts/browser/operator-*.png."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from arena.models import Episode, EvaluationSession, Preference
from policy_server.base import BasePolicy
from policy_server.baselines import make_baseline
from policy_server.check import DRY_RUN_PROMPT
from policy_server.server import serve_in_thread
from tests.browser.conftest import DESKTOP, screenshot
from tests.client.conftest import arena  # noqa: F401 - the live arena fixture

ARENA_EVAL = Path(sys.executable).with_name("arena-eval")
MAX_STEPS = 40


def wait_until(page, expression: str, timeout: float = 60.0) -> None:
    """Poll ``expression`` in the page until it is truthy. (Playwright's wait_for_function evaluates strings
    with eval inside the page, which the screen's Content-Security-Policy rightly forbids.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        time.sleep(0.05)


class Gate:
    """Holds each gated policy at its second inference of an episode until the test lets it go on."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.go = threading.Semaphore(0)

    def hold(self) -> None:
        self.entered.release()
        assert self.go.acquire(timeout=120), "the test never let the policy go on"

    def wait_until_held(self) -> None:
        assert self.entered.acquire(timeout=60), "no episode reached its second inference"


class Gated(BasePolicy):
    def __init__(self, name: str, gate: Gate) -> None:
        self.inner = make_baseline(name)
        self.gate = gate
        self.calls = 0

    @property
    def metadata(self):
        return self.inner.metadata

    def reset(self, reset_info=None):
        self.calls = 0
        self.inner.reset(reset_info)

    def infer(self, obs):
        if obs["prompt"] != DRY_RUN_PROMPT:
            self.calls += 1
            if self.calls == 2:
                self.gate.hold()
        return self.inner.infer(obs)


class Run:
    """``arena-eval run`` with the operator screen, its output read in a thread."""

    def __init__(self, home: Path) -> None:
        command = [str(ARENA_EVAL), "--home", str(home), "run", "--robot", "replica", "--judge", "human",
                   "--max-steps", str(MAX_STEPS), "--quiet", "--seed", "3",
                   "--task", "put the red block in the bowl"]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def url(self) -> str:
        deadline = time.monotonic() + 60
        while True:
            for line in self.lines:
                if line.startswith("operator screen: "):
                    return line.split()[2]
            assert self.process.poll() is None, self.process.communicate()
            assert time.monotonic() < deadline, self.lines
            time.sleep(0.05)

    def finish(self) -> tuple[int, str]:
        code = self.process.wait(timeout=120)
        self._reader.join(10)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()


def test_an_operator_runs_a_whole_session_on_the_screen(arena, browser):  # noqa: F811
    gate = Gate()
    with (
        serve_in_thread(Gated("expert", gate)) as expert,
        serve_in_thread(Gated("random", gate)) as random_policy,
    ):
        arena.register("gated-expert", expert.url)
        arena.register("gated-random", random_policy.url)
        arena.configure()
        run = Run(arena.home)
        try:
            url = run.url()
            assert url.startswith("http://127.0.0.1:")
            context = browser.new_context(viewport=DESKTOP)
            page = context.new_page()
            page.goto(url)

            # Slot A: the start image; "not ready" asks again instead of throwing the session away.
            page.wait_for_selector("#scene:not([hidden])", timeout=60_000)
            wait_until(page, "document.getElementById('start-image').naturalWidth > 0")
            assert "start.png" in page.inner_text("#start-path")
            screenshot(page, "operator-scene")
            page.click("#scene-not-ready")
            wait_until(page, "document.getElementById('message').textContent.includes('Take your time')")
            assert page.is_visible("#scene")
            page.click("#scene-ready")

            # The episode, live: the cameras and the step counter, while the policy is held mid-episode.
            page.wait_for_selector("#episode:not([hidden])")
            gate.wait_until_held()
            wait_until(
                page,
                "[...document.querySelectorAll('#cameras img')].length >= 2 && "
                "[...document.querySelectorAll('#cameras img')].every(i => i.naturalWidth > 0)",
            )
            wait_until(page, "Number(document.getElementById('step').textContent) >= 1")
            assert page.inner_text("#max-steps") == str(MAX_STEPS)
            screenshot(page, "operator-episode")
            gate.go.release()

            # Slot B: the same start image; stopped early with the Stop button.
            page.wait_for_selector("#scene:not([hidden])")
            page.click("#scene-ready")
            page.wait_for_selector("#episode:not([hidden])")
            gate.wait_until_held()
            wait_until(page, "Number(document.getElementById('step').textContent) >= 1")
            page.click("#stop")
            wait_until(page, "document.getElementById('message').textContent.includes('Stopping')")
            gate.go.release()

            # The rating form, then the reveal.
            page.wait_for_selector("#rate:not([hidden])")
            page.fill("#progress-a", "70")
            page.fill("#progress-b", "20")
            page.check("input[name=choice][value=A]")
            page.fill("#reason", "A put the block in the bowl; B was stopped")
            page.check("input[name=valid][value=yes]")
            screenshot(page, "operator-rate")
            page.click("#submit-rating")
            page.wait_for_selector("#reveal:not([hidden])", timeout=60_000)
            revealed = {page.inner_text("#reveal-a"), page.inner_text("#reveal-b")}
            assert any("Gated-Expert" in text for text in revealed), revealed
            assert any("Gated-Random" in text for text in revealed), revealed
            assert page.inner_text("#next") == "Finish"
            screenshot(page, "operator-reveal")
            page.click("#next")
            code, stderr = run.finish()
            assert code == 0, (stderr, run.lines)
            page.wait_for_selector("#done:not([hidden])")
            context.close()
        finally:
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait(10)

    session = EvaluationSession.objects.get()
    assert session.state == "submitted"
    preference = Preference.objects.get(session=session)
    assert (preference.choice, preference.valid) == ("A", True)
    assert preference.reason == "A put the block in the bowl; B was stopped"
    episodes = {e.slot: e for e in Episode.objects.filter(session=session)}
    assert (episodes["A"].progress, episodes["B"].progress) == (70, 20)
    assert episodes["A"].steps == MAX_STEPS and episodes["B"].steps < MAX_STEPS  # B was stopped
    assert not (arena.home / "spool" / str(session.pk)).exists()  # sent: its folder is gone
