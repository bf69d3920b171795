"""A replica session's trajectories round-trip: recorded per control step by the client, kept in the spool while
the network is down, uploaded when it is back, verified by the server, and read back equal by the lab."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import numpy as np
import pyarrow.parquet as pq
import requests

from arena.models import Episode, EvaluationSession, Preference, Trajectory
from evaluator_client.api import ArenaApi
from evaluator_client.judge import AutoJudge
from evaluator_client.runner import RunOptions, run_session
from evaluator_client.spool import Spool
from evaluator_client.trajectory import FORMAT, read_trajectory
from tests.client.proxy import FlakyLink
from tests.client.test_run_sessions import RUN, CutsTheLink


def test_replica_trajectory_round_trips(network, monkeypatch, tmp_path):
    target = urlparse(network.url)
    link = FlakyLink(target.hostname, target.port)
    from django.conf import settings

    settings.ARENA_PUBLIC_URL = link.url
    try:
        network.configure(server_url=link.url)
        monkeypatch.setattr("evaluator_client.cli._judge", lambda args: CutsTheLink(link))
        assert network.eval(*RUN) == 1  # spooled: the link went down before the uploads
        session = EvaluationSession.objects.get()
        folder = network.home / "spool" / str(session.id)
        recorded = {slot: read_trajectory(folder / f"{slot}-trajectory.parquet") for slot in "AB"}
        copies = {slot: (folder / f"{slot}-trajectory.parquet").read_bytes() for slot in "AB"}
        assert Trajectory.objects.count() == 0
        link.restore()
        assert network.eval("flush") == 0
    finally:
        link.close()

    scene = json.loads(session.scene_notes)
    for slot in "AB":
        table, meta = recorded[slot]
        episode = Episode.objects.get(session=session, slot=slot)
        assert meta["format"] == FORMAT and meta["slot"] == slot and meta["session_id"] == str(session.id)
        assert meta["scene"]["seed"] == scene["seed"] == 3 and "perturbation" in meta["scene"]
        assert table.num_rows == episode.steps > 0
        steps = table.column("step").to_pylist()
        assert steps == list(range(episode.steps))
        assert np.all(np.diff(table.column("timestamp").to_numpy()) > 0)
        starts = table.column("chunk_start").to_pylist()
        latency = table.column("latency_ms").to_pylist()
        assert starts[0] and all(
            (lat is not None) == start for lat, start in zip(latency, starts, strict=True)
        )
        calls = [lat for lat in latency if lat is not None]
        assert abs(np.mean(calls) - episode.mean_latency_ms) < 0.01
        assert table.column("chunk_index").to_pylist()[-1] == len(calls) - 1
        joints = np.array(table.column("observation.joint_position").to_pylist())
        assert joints.shape == (episode.steps, 7) and np.ptp(joints, axis=0).max() > 0  # the arm moved
        gripper = table.column("observation.gripper_position").to_numpy()
        assert ((0 <= gripper) & (gripper <= 1)).all()

        stored = Trajectory.objects.get(session=session, slot=slot)
        assert stored.state == "verified" and stored.n_steps == episode.steps
        listed = network.lab_get(f"/sessions/{session.id}/")["slots"][slot]["trajectory"]
        assert listed == {
            "id": str(stored.id),
            "state": "verified",
            "size": stored.size,
            "n_steps": stored.n_steps,
        }
        body = network.lab_get(f"/trajectories/{stored.id}/")
        assert body["sha256"] == stored.sha256 and body["url"]
        # The URL names the link the lab used (now closed); the same file straight from the server:
        downloaded = requests.get(network.url + urlparse(body["url"]).path, timeout=30)
        assert downloaded.status_code == 200
        assert downloaded.content == copies[slot]
        path = tmp_path / f"{slot}.parquet"
        path.write_bytes(downloaded.content)
        back, back_meta = read_trajectory(path)
        assert back.equals(table) and back_meta == meta
        assert pq.ParquetFile(path).schema_arrow.equals(table.schema)
        assert not (folder / f"{slot}-trajectory.parquet").exists()  # uploaded, so no longer spooled


def test_the_lab_client_chooses_whether_a_reason_is_published(network):
    from evaluator_client import config as config_mod
    from evaluator_client.cli import replica_setup

    network.configure()
    config = config_mod.load(network.home)
    make_robot, next_task = replica_setup(config, seed=1)
    task, category = next_task(0)
    with ArenaApi(network.url, network.lab_key) as api:
        for choice in (True, None):
            outcome = run_session(
                api=api,
                spool=Spool(network.home),
                robot_name=config.robot.name,
                make_robot=make_robot,
                judge=AutoJudge(margin=10),
                task=task,
                task_category=category,
                seed=5,
                options=RunOptions(max_steps=30, show_progress=False, publish_reason=choice),
                log=lambda line: None,
            )
            assert outcome.status == "submitted"
    assert sorted(Preference.objects.values_list("reason_public", flat=True)) == [False, True]
