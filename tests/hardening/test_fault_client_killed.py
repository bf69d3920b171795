"""Fault: ``arena-eval run`` (a real subprocess) is killed with SIGKILL after the judge answered but before
the preference reached the server.

The network to the arena drops once slot A's episode is reported, so the preference can only be in the spool;
the process is killed as soon as the spool holds it. ``arena-eval flush`` then finishes the session: the
missing episode, the videos and the preference arrive once each. (Killed before the judge answered, the spool
holds no verdict: flush reports the session as still pending and the server expires it when its lease runs
out; nothing is invented.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from urllib.parse import urlparse

from arena.models import Episode, EvaluationSession, Preference, Video
from tests.client.conftest import network  # noqa: F401
from tests.client.proxy import FlakyLink
from tests.workers import ROOT, wait_for


def _entry(home) -> dict | None:
    entries = list((home / "spool").glob("*/entry.json"))
    return json.loads(entries[0].read_text()) if entries else None


def test_client_killed_with_the_preference_spooled_is_finished_by_flush(network, settings):  # noqa: F811
    target = urlparse(network.url)
    link = FlakyLink(target.hostname, target.port)
    settings.ARENA_PUBLIC_URL = link.url  # local-disk upload URLs go through the same link
    proc = None
    try:
        network.configure(server_url=link.url)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evaluator_client",
                "--home",
                str(network.home),
                "run",
                "--robot",
                "replica",
                "--judge",
                "auto",
                "--max-steps",
                "60",
                "--quiet",
                "--seed",
                "3",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def episodes_reported() -> bool:  # both episodes run, then both are reported, then the verdict
            entry = _entry(network.home)
            return bool(entry and entry["episodes"].get("B", {}).get("sent"))

        wait_for(episodes_reported, timeout=120, what="both episodes' reports", proc=proc)
        link.cut()

        def preference_spooled() -> bool:
            entry = _entry(network.home)
            return bool(entry and entry["preference"]) or proc.poll() is not None

        wait_for(preference_spooled, timeout=120, what="the judge's preference in the spool")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)

        entry = _entry(network.home)
        assert entry["status"] == "ready" and entry["preference"]["sent"] is False
        session = EvaluationSession.objects.get(pk=entry["session_id"])
        assert session.state == "running"
        assert Episode.objects.count() == 2 and Preference.objects.count() == 0

        assert network.eval("flush") == 1  # the network is still down: still pending, nothing lost
        link.restore()
        assert network.eval("flush") == 0
        assert network.eval("flush") == 0  # nothing left, nothing sent twice
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        link.close()
    session.refresh_from_db()
    assert session.state == "submitted"
    preference = Preference.objects.get()
    assert (preference.choice, preference.reason) == (
        entry["preference"]["body"]["choice"],
        entry["preference"]["body"]["reason"],
    )
    assert sorted(Episode.objects.values_list("slot", "progress")) == sorted(
        (slot, e["body"]["progress"]) for slot, e in entry["episodes"].items()
    )
    assert (
        Video.objects.count() == Video.objects.filter(state="verified").count() == len(entry["videos"]) == 4
    )
    assert _entry(network.home) is None  # delivered: the session's folder is cleaned up
