"""``python -m benchmarks.release_build``: size, build time and peak memory of a release of N synthetic sessions.

Fills a fresh SQLite arena (under a temporary ``ARENA_VAR_DIR``, local-disk storage) with N published sessions,
each with two episodes of ``--steps`` control steps (a distinct Parquet trajectory per episode) and two small
MP4 videos per episode (wrist and exterior, 64 x 48, 2 s), fits a snapshot, then builds the release in a forked
child process and reports its wall time, the release's size, its archive's size, the child's peak resident set
(``ru_maxrss``), how far it rose above the resident set the child started with (the parent's pages it
inherits, which grow with N from populating the database), and Arrow's peak allocation. Streaming shows as a
rise that does not grow with N.

    python -m benchmarks.release_build [--sizes 100,1000] [--steps 150] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _setup(var_dir: Path) -> None:
    os.environ["ARENA_VAR_DIR"] = str(var_dir)
    os.environ.pop("DATABASE_URL", None)
    for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        os.environ.pop(name, None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def _video(directory: Path, camera: str) -> bytes:
    import numpy as np

    from evaluator_client.video import VideoRecorder

    recorder = VideoRecorder(directory, "bench", [camera], source_hz=10, fps=10)
    for k in range(20):
        image = np.zeros((48, 64, 3), dtype=np.uint8)
        image[:, : 2 + 3 * k] = (30 * (k % 8), 120, 200)
        recorder.add({camera: image})
    (video,) = recorder.close()
    return video.path.read_bytes()


def _populate(n: int, steps: int, scratch: Path) -> None:
    """N submitted sessions with their rows and stored objects, written straight through the models."""
    import io

    import numpy as np
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from arena.models import Lab, Organization, Policy, Robot
    from arena.storage import get_storage

    storage = get_storage()
    storage.ensure_bucket()
    owner = get_user_model().objects.create(username="bench-owner")
    org = Organization.objects.create(name="Bench Org", slug="bench-org")
    lab = Lab.objects.create(name="Bench Lab", slug="bench-lab", organization=org)
    robot = Robot.objects.create(lab=lab, name="replica-1", platform="replica:tabletop-v1")
    policies = [
        Policy.objects.create(
            slug=f"bench-{k}",
            name=f"Bench {k}",
            organization=org,
            owner=owner,
            endpoint_url=f"ws://10.0.0.1:{9000 + k}",
            status=Policy.Status.ACTIVE,
            videos_public=True,
        )
        for k in range(6)
    ]
    world = {
        "lab": lab,
        "robot": robot,
        "policies": policies,
        "videos": {camera: _video(scratch, camera) for camera in ("exterior", "wrist")},
        "rng": np.random.default_rng(0),
        "now": timezone.now(),
        "storage": storage,
        "steps": steps,
        "n": n,
    }
    with transaction.atomic():  # one commit, not one fsync per row
        for i in range(n):
            _session(i, world)
    call_command("rebuild_tallies", verbosity=0, stdout=io.StringIO())


PROPRIO_KEYS = (
    "observation/joint_position",
    "observation/cartesian_position",
    "observation/gripper_position",
)


def _session(i: int, world: dict) -> None:
    """One synthetic submitted session: its rows, two Parquet trajectories and four MP4 videos in storage."""
    import hashlib
    import io
    import json
    from datetime import timedelta

    import numpy as np
    import pyarrow.parquet as pq

    from arena.models import Episode, EvaluationSession, Preference, Trajectory, Video
    from evaluator_client.trajectory import TrajectoryRecorder

    rng, policies, storage, steps = world["rng"], world["policies"], world["storage"], world["steps"]
    a, b = rng.choice(len(policies), size=2, replace=False)
    ended = world["now"] - timedelta(minutes=world["n"] - i)
    session = EvaluationSession.objects.create(
        lab=world["lab"],
        robot=world["robot"],
        task="put the marker in the cup",
        task_category="pick-place",
        scene_notes=json.dumps({"seed": i, "perturbation": {"light": 0.1}}),
        policy_a=policies[a],
        policy_b=policies[b],
        pair_probability=1 / 15,
        state=EvaluationSession.State.SUBMITTED,
        lease_expires_at=ended,
        created_at=ended - timedelta(minutes=2),
        ended_at=ended,
    )
    progress = {}
    for slot in "AB":
        progress[slot] = int(rng.integers(0, 101))
        Episode.objects.create(
            session=session, slot=slot, progress=progress[slot], success=False, steps=steps, duration_s=10.0
        )
        recorder = TrajectoryRecorder(action_dim=8)
        walk = np.cumsum(rng.normal(0, 0.01, size=(steps, 7)), axis=0)
        for t in range(steps):
            values = (walk[t], np.r_[walk[t, :3], 0, 0, 0], [t / steps])
            recorder.add_step(
                step=t,
                time_s=t / 15,
                proprio=dict(zip(PROPRIO_KEYS, values, strict=True)),
                action=np.r_[walk[t], 1.0],
                chunk_index=t // 8,
                chunk_start=t % 8 == 0,
                latency_s=0.03 if t % 8 == 0 else None,
            )
        sink = io.BytesIO()
        pq.write_table(
            recorder.table({"format": "arena-trajectory/1", "action_space": "joint_position"}), sink
        )
        body = sink.getvalue()
        key = f"sessions/{session.id}/{slot}/trajectory-{i}.parquet"
        storage.write(key=key, stream=io.BytesIO(body), length=len(body))
        Trajectory.objects.create(
            session=session,
            slot=slot,
            object_key=key,
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            n_steps=steps,
            state=Trajectory.State.VERIFIED,
        )
        for camera, video in world["videos"].items():
            key = f"sessions/{session.id}/{slot}/{camera}-{i}.mp4"
            storage.write(key=key, stream=io.BytesIO(video), length=len(video))
            Video.objects.create(
                session=session,
                slot=slot,
                camera=camera,
                object_key=key,
                content_type="video/mp4",
                size=len(video),
                sha256=hashlib.sha256(video).hexdigest(),
                state=Video.State.VERIFIED,
            )
    Preference.objects.create(
        session=session,
        choice="A" if progress["A"] >= progress["B"] else "B",
        reason="synthetic",
        policy_a=policies[a],
        policy_b=policies[b],
        lab=world["lab"],
        task_category="pick-place",
        progress_a=progress["A"],
        progress_b=progress["B"],
        created_at=ended,
    )


def _rss_now() -> int:
    """This process's resident set now, in bytes (Linux ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _build_in_child() -> dict:
    """Build the release in a forked child; returns its numbers (the child's rusage is read after it exits)."""
    import json

    from django.db import connections

    connections.close_all()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: build, report, exit without running the parent's cleanup
        os.close(read)
        import pyarrow as pa

        start_rss = _rss_now()
        from arena.services.ranking import ranking_snapshot_create
        from arena.services.releases import release_build

        snapshot = ranking_snapshot_create()
        started = time.perf_counter()
        release = release_build(snapshot=snapshot)
        seconds = time.perf_counter() - started
        numbers = {
            "seconds": seconds,
            "size": release.size_bytes,
            "archive": release.manifest["archive"]["size"],
            "episodes": release.manifest["n_episodes"],
            "sessions": release.n_sessions,
            "arrow_peak": pa.default_memory_pool().max_memory(),
            "start_rss": start_rss,
        }
        os.write(write, json.dumps(numbers).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        payload = pipe.read()
    _, status, usage = os.wait4(pid, 0)
    if status != 0 or not payload:
        raise SystemExit(f"the build failed in the child (status {status})")
    numbers = json.loads(payload)
    numbers["peak_rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    return numbers


def run_one(n: int, steps: int) -> dict:
    """Populate a fresh arena with ``n`` sessions in a child process and build its release; the numbers."""
    import json

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        with tempfile.TemporaryDirectory(prefix="arena-release-bench-") as tmp:
            _setup(Path(tmp) / "var")
            started = time.perf_counter()
            _populate(n, steps, Path(tmp))
            populate = time.perf_counter() - started
            numbers = {**_build_in_child(), "populate": populate}
        os.write(write, json.dumps(numbers).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    if not payload:
        raise SystemExit(f"benchmark of {n} sessions failed")
    return json.loads(payload)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000", help="comma-separated session counts")
    parser.add_argument("--steps", type=int, default=150, help="control steps per episode")
    parser.add_argument("--quick", action="store_true", help="sizes 10,50 (for CI)")
    args = parser.parse_args()
    sizes = [10, 50] if args.quick else [int(s) for s in args.sizes.split(",")]
    mib = 1024 * 1024
    print(f"release build, {args.steps} steps per episode, 2 MP4 videos per episode (64x48, 2 s)")
    header = (
        f"{'sessions':>8} {'episodes':>8} {'release MiB':>11} {'archive MiB':>11} {'build s':>8} "
        f"{'peak RSS MiB':>12} {'build rise MiB':>14} {'Arrow peak MiB':>14} {'populate s':>10}"
    )
    print(header)
    for n in sizes:
        r = run_one(n, args.steps)
        print(
            f"{r['sessions']:>8} {r['episodes']:>8} {r['size'] / mib:>11.1f} {r['archive'] / mib:>11.1f} "
            f"{r['seconds']:>8.1f} {r['peak_rss'] / mib:>12.0f} {(r['peak_rss'] - r['start_rss']) / mib:>14.0f} "
            f"{r['arrow_peak'] / mib:>14.1f} "
            f"{r['populate']:>10.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
