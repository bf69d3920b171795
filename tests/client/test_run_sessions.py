"""arena-eval against a live server: whole sessions in the replica with the automatic judge, and faults."""

from __future__ import annotations

from arena.models import Episode, EvaluationSession, Preference, Trajectory, Video
from evaluator_client.judge import AutoJudge
from policy_server.base import BasePolicy
from policy_server.baselines import make_baseline
from policy_server.server import serve_in_thread
from tests.client.proxy import FlakyLink

RUN = ("run", "--robot", "replica", "--judge", "auto", "--max-steps", "60", "--quiet", "--seed", "3")


def test_sessions_complete_end_to_end(network):
    network.configure()
    assert network.eval(*RUN, "--sessions", "2") == 0
    sessions = EvaluationSession.objects.all()
    assert [s.state for s in sessions] == ["submitted", "submitted"]
    assert Preference.objects.count() == 2 and Episode.objects.count() == 4
    assert Video.objects.filter(state="verified").count() == 8  # 2 sessions x 2 slots x (exterior, wrist)
    assert Trajectory.objects.filter(state="verified").count() == 4  # 2 sessions x 2 slots
    for s in sessions:
        assert '"seed": ' in s.scene_notes
    assert network.eval("status") == 0


def test_bad_configuration_names_the_field(network, capsys):
    assert network.eval("configure", "--server", "ftp://x", "--key", network.lab_key) == 2
    assert "server_url" in capsys.readouterr().err
    assert network.eval("configure", "--server", network.url, "--key", network.owner_key) == 1
    assert "lab key" in capsys.readouterr().err
    assert network.eval("run") == 2
    assert "arena-eval configure" in capsys.readouterr().err


def test_config_file_is_private(network):
    network.configure()
    assert (network.home / "config.json").stat().st_mode & 0o777 == 0o600


class DiesMidEpisode(BasePolicy):
    """The expert, whose server goes away after a few inferences."""

    def __init__(self) -> None:
        self.inner = make_baseline("expert")
        self.calls = 0
        self.handle = None

    @property
    def metadata(self):
        return self.inner.metadata

    def reset(self, reset_info=None):
        self.inner.reset(reset_info)

    def infer(self, obs):
        self.calls += 1
        if self.calls == 3:
            self.handle.stop()
        return self.inner.infer(obs)


def test_policy_server_dies_mid_episode(network):
    network.servers["random"].stop()  # keep the pool to the expert and the dying policy
    from arena.models import Policy

    Policy.objects.filter(slug="random").update(status="failing")
    dying = DiesMidEpisode()
    with serve_in_thread(dying) as handle:
        dying.handle = handle
        network.register("dying", handle.url)
        network.configure()
        assert network.eval(*RUN) == 1  # its only session aborted
    session = EvaluationSession.objects.get()
    assert session.state == "aborted"
    dying_slot = "policy_a" if session.policy_a.slug == "dying" else "policy_b"
    assert session.abort_fault == dying_slot
    assert Preference.objects.count() == 0


class CutsTheLink(AutoJudge):
    """Decides like the automatic judge, then the network drops before anything is uploaded."""

    def __init__(self, link: FlakyLink) -> None:
        super().__init__(margin=10)
        self.link = link

    def preference(self, a, b):
        verdict = super().preference(a, b)
        self.link.cut()
        return verdict


def test_network_drop_during_upload_is_flushed_later(network, settings, monkeypatch):
    from urllib.parse import urlparse

    target = urlparse(network.url)
    link = FlakyLink(target.hostname, target.port)
    settings.ARENA_PUBLIC_URL = link.url  # local-disk upload URLs go through the same flaky link
    try:
        network.configure(server_url=link.url)
        monkeypatch.setattr("evaluator_client.cli._judge", lambda args: CutsTheLink(link))
        assert network.eval(*RUN) == 1  # the session is spooled, not lost
        session = EvaluationSession.objects.get()
        assert session.state == "running" and Episode.objects.count() == 2 and Preference.objects.count() == 0
        assert Video.objects.filter(state="verified").count() == 0
        assert network.eval("flush") == 1  # still down: still pending
        link.restore()
        assert network.eval("flush") == 0
        assert network.eval("flush") == 0  # nothing left, nothing sent twice
    finally:
        link.close()
    session.refresh_from_db()
    assert session.state == "submitted"
    assert Preference.objects.count() == 1 and Episode.objects.count() == 2
    assert Video.objects.filter(state="verified").count() == 4


def test_bad_operator_input_is_asked_again(network, monkeypatch, capsys):
    """``--no-ui``: the terminal prompts. "n" at "Scene ready?" asks again (it used to discard the session);
    both episodes run before the scores are asked."""
    network.configure()
    answers = iter(
        [
            "",
            "n",
            "y",  # start A (empty -> asked again; n = not yet -> asked again)
            "y",  # start B
            "150",
            "70",  # progress A (out of range -> asked again)
            "abc",
            "20",  # progress B (not a number -> again)
            "C",
            "a",  # preference (unknown -> again)
            "",
            "A moved the block",  # reason (empty -> again)
            "maybe",
            "y",
        ]
    )  # valid? (unclear -> again)
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    run = ("run", "--robot", "replica", "--judge", "human", "--no-ui", "--max-steps", "30", "--quiet")
    assert network.eval(*run) == 0
    pref = Preference.objects.get()
    assert (pref.choice, pref.reason, pref.valid) == ("A", "A moved the block", True)
    assert sorted(Episode.objects.values_list("progress", flat=True)) == [20, 70]
    assert next(answers, None) is None  # every scripted answer was used
    out = capsys.readouterr().out
    session_folder = network.home / "spool" / str(pref.session_id)
    assert f"start image ({session_folder / 'start.png'})" in out  # where to find the start image
    assert "Take your time" in out
    assert not session_folder.exists()  # sent, so its folder is gone (no --keep-files)


def test_flush_marks_a_verdictless_session_abandoned_once_the_server_closed_it(network, capsys):
    """A client that died before the judge answered leaves a 'running' entry: pending while the session is open,
    abandoned (not retried forever) once the server expired it."""
    from datetime import timedelta

    from django.utils import timezone

    from evaluator_client import config as config_mod
    from evaluator_client.api import ArenaApi
    from evaluator_client.spool import Spool

    network.configure()
    config = config_mod.load(network.home)
    with ArenaApi(config.server_url, config.api_key) as api:
        session = api.request_session(robot="replica-1", task="put the red block in the bowl")
    Spool(network.home).create(session)
    assert network.eval("flush") == 1  # the session is still open: pending
    EvaluationSession.objects.filter(pk=session["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    from arena.services.sessions import session_expire_overdue

    assert session_expire_overdue() == 1
    capsys.readouterr()
    assert network.eval("flush") == 0
    assert f"abandoned {session['id']}" in capsys.readouterr().out
    assert network.eval("flush") == 0  # nothing left to do


def test_a_lab_runs_sessions_in_its_own_station_scene(network):
    """``configure --scene FILE``: the robot is the replica of that scene file (platform replica:<its name>)."""
    from pathlib import Path

    from arena.models import Robot

    scene_file = Path(__file__).resolve().parents[2] / "evaluator_client" / "scenes" / "workbench-v1.json"
    network.configure(None, "--scene", str(scene_file))
    assert Robot.objects.get(name="replica-1").platform == "replica:workbench-v1"
    assert network.eval(*RUN) == 0
    session = EvaluationSession.objects.get()
    assert session.state == "submitted" and "workbench-v1" in session.scene_notes


def test_keep_files_keeps_the_session_folder_with_its_videos_and_trajectories(network):
    network.configure()
    assert network.eval(*RUN, "--keep-files") == 0
    session = EvaluationSession.objects.get()
    folder = network.home / "spool" / str(session.pk)
    assert sorted(p.name for p in folder.iterdir()) == [
        "A-exterior_1.mp4",
        "A-trajectory.parquet",
        "A-wrist.mp4",
        "B-exterior_1.mp4",
        "B-trajectory.parquet",
        "B-wrist.mp4",
        "entry.json",
        "start.png",
    ]


def test_the_data_folder_defaults_to_xdg_unless_a_client_folder_is_chosen(monkeypatch, tmp_path):
    from evaluator_client.config import default_data_dir

    for name in ("ARENA_EVAL_DATA", "ARENA_EVAL_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".local" / "share" / "arena-eval"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "arena-eval"
    assert default_data_dir(tmp_path / "client") == tmp_path / "client"  # --home keeps everything together
    monkeypatch.setenv("ARENA_EVAL_DATA", str(tmp_path / "data"))
    assert default_data_dir(tmp_path / "client") == tmp_path / "data"


def test_data_dir_holds_the_session_folders(network, tmp_path):
    """--data-dir: the session folders go there (not to the system temp, not to the --home folder)."""
    network.configure()
    data = tmp_path / "data"
    assert network.eval("--data-dir", str(data), *RUN, "--sessions", "2") == 0
    assert list((data / "spool").iterdir()) == []  # both sent, both folders gone
    assert network.eval("--data-dir", str(data), *RUN, "--keep-files") == 0
    kept = EvaluationSession.objects.order_by("-created_at").first()
    assert (data / "spool" / str(kept.pk) / "start.png").exists()
    assert not (network.home / "spool").exists() or not any((network.home / "spool").iterdir())
