"""A release of published sessions, read back by the LeRobot v3 spec with pyarrow and PyAV only (no arena code):
info.json's path templates lead to the frames and videos of every episode, the frames equal the uploaded
trajectories, each video decodes and lasts what the episodes table says, the manifest's hashes and data hash
hold, the comparisons are the snapshot's fitted rows, and nothing private is in it."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
from django.test import Client

from arena.models import Release, Trajectory
from arena.services.ranking import ranking_snapshot_create
from arena.services.releases import release_build, release_build_due
from tests.opendata.conftest import mp4, recorded_session
from tests.opendata.test_consent import publish_all

SECRET = "private-reason-5c1e"


def read_back(root: Path) -> dict:
    """Everything an outside reader gets from the release folder ``root``, by the published spec."""
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    frames = {}
    for episode in episodes:
        path = root / info["data_path"].format(
            chunk_index=episode["data/chunk_index"], file_index=episode["data/file_index"]
        )
        table = pq.read_table(path)
        part = table.slice(episode["dataset_from_index"], episode["length"])
        assert part.column("episode_index").to_pylist() == [episode["episode_index"]] * episode["length"]
        assert part.column("frame_index").to_pylist() == list(range(episode["length"]))
        frames[episode["episode_index"]] = part
        for key, feature in info["features"].items():
            if feature["dtype"] != "video" or f"videos/{key}/file_index" not in episode:
                continue
            video = root / info["video_path"].format(
                video_key=key,
                chunk_index=episode[f"videos/{key}/chunk_index"],
                file_index=episode[f"videos/{key}/file_index"],
            )
            with av.open(str(video)) as container:
                decoded = [f for f in container.decode(video=0)]
            assert len(decoded) > 0
            assert decoded[0].height == feature["shape"][0] and decoded[0].width == feature["shape"][1]
            assert (
                abs(len(decoded) / feature["info"]["video.fps"] - episode[f"videos/{key}/to_timestamp"]) < 0.2
            )
    sessions = pq.read_table(root / "arena/sessions.parquet").to_pylist()
    return {"info": info, "episodes": episodes, "frames": frames, "sessions": sessions}


def test_release_reads_back_by_the_spec(local_storage, pool, lab1, robot1, owner, tmp_path, settings):
    publish_all(owner)
    videos = {"A": mp4(tmp_path, "a", 30), "B": mp4(tmp_path, "b", 20)}
    shown = recorded_session(lab1, videos=videos, reason="A was faster", reason_public=True)
    recorded_session(lab1, videos=videos, reason=SECRET)  # the lab keeps this reason private
    blind = recorded_session(lab1, videos=videos, submit=False)  # recorded, not revealed yet
    snapshot = ranking_snapshot_create()

    release = release_build(snapshot=snapshot)
    assert release.state == "ready" and release.n_sessions == 2
    root = Path(settings.VIDEO_DIR) / release.prefix
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["files"]:
        body = (root / entry["path"]).read_bytes()
        assert len(body) == entry["size"] and hashlib.sha256(body).hexdigest() == entry["sha256"]
    listed = {e["path"] for e in manifest["files"]} | {"manifest.json"}
    assert listed == {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    canonical = json.dumps(manifest["files"], sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(canonical).hexdigest() == manifest["data_hash"] == release.data_hash
    comparisons = (root / "arena/comparisons.csv").read_bytes()
    assert hashlib.sha256(comparisons).hexdigest() == snapshot.data_hash

    data = read_back(root)
    published = {s["session_id"] for s in data["sessions"]}
    assert len(published) == 2 and shown in published and blind not in published
    all_text = "".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())
    assert SECRET not in all_text and "Berkeley" not in all_text
    for row in data["sessions"]:
        assert row["reason"] == ("A was faster" if row["session_id"] == shown else None)
        assert row["lab"].startswith("lab-")
        for slot in "AB":
            index = row[f"episode_index_{slot.lower()}"]
            trajectory = Trajectory.objects.get(session_id=row["session_id"], slot=slot)
            original = pq.read_table(Path(settings.VIDEO_DIR) / trajectory.object_key)
            part = data["frames"][index]
            state = np.array(part.column("observation.state").to_pylist())
            joints = np.array(original.column("observation.joint_position").to_pylist())
            assert np.allclose(state[:, :7], joints, atol=1e-6)
            assert np.allclose(state[:, 7], original.column("observation.gripper_position").to_numpy())
            assert part.num_rows == original.num_rows
            elapsed = part.column("arena.elapsed_s").to_pylist()
            assert elapsed == original.column("timestamp").to_pylist()
            episode = data["episodes"][index]
            assert episode["arena_session_id"] == row["session_id"] and episode["arena_slot"] == slot
    assert data["info"]["total_episodes"] == len(data["episodes"]) == 2 * len(data["sessions"])
    assert data["info"]["total_frames"] == sum(e["length"] for e in data["episodes"])

    archive = Path(settings.VIDEO_DIR) / settings.ARENA_RELEASE_PREFIX / f"v{release.version}.tar"
    with tarfile.open(archive) as tar:
        assert f"v{release.version}/manifest.json" in tar.getnames()
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == release.manifest["archive"]["sha256"]

    web = Client()
    page = web.get(f"/releases/{release.version}/").content.decode()
    assert release.data_hash in page
    download = web.get(f"/releases/{release.version}/files/meta/info.json")
    assert download.status_code == 302
    assert web.get(f"/releases/{release.version}/files/../../secret").status_code == 404
    assert web.get(f"/releases/{release.version}.tar").status_code == 302

    # Immutable: the schedule builds nothing new for a snapshot that has a release.
    assert release_build_due() is None and Release.objects.count() == 1


def test_release_on_s3_stores_every_manifest_file(s3_storage, pool, lab1, robot1, owner, tmp_path):
    """On S3 (a real SeaweedFS server) the release's files are uploaded under its prefix, byte for byte."""
    publish_all(owner)
    recorded_session(lab1, videos={"A": mp4(tmp_path, "a", 12), "B": mp4(tmp_path, "b", 12)})
    release = release_build(snapshot=ranking_snapshot_create())
    assert release.state == "ready" and release.n_sessions == 1
    for entry in release.manifest["files"]:
        key = release.prefix + entry["path"]
        assert s3_storage.sha256(key=key, limit=entry["size"]) == entry["sha256"]
    archive = f"releases/v{release.version}.tar"
    assert s3_storage.sha256(key=archive, limit=10**9) == release.manifest["archive"]["sha256"]
    url = Client().get(f"/releases/{release.version}/files/meta/info.json")["Location"]
    assert s3_storage.bucket in url  # a presigned S3 link, not a stream through the web process
