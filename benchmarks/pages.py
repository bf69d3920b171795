"""``python -m benchmarks.pages``: server time of the public pages on a board with real and replica verdicts.

Builds a fresh SQLite arena in a temporary folder (never the shared databases): P policies, L labs each with a
real robot (platforms alternate between ``droid`` and ``droid:franka``) and a replica, N comparisons drawn from
Bradley-Terry strengths (the replica's distorted), inserted with ``bulk_create``; rebuilds the tallies, times
the refit (the whole board plus every slice and the agreement), then renders each page through Django's test
client R times and prints a table of the median and the slowest render.

    python -m benchmarks.pages [--policies 30] [--labs 6] [--comparisons 6000] [--repeat 15] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent


def build(n_policies: int, n_labs: int, n_comparisons: int, seed: int = 7) -> list[str]:
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from arena.models import EvaluationSession, Lab, Organization, Policy, Preference, Robot
    from arena.services.tallies import tallies_rebuild

    rng = np.random.default_rng(seed)
    owner = get_user_model().objects.create(username="bench-owner")
    makers = [Organization.objects.create(name=f"Maker {k}", slug=f"maker-{k}") for k in range(4)]
    policies = [
        Policy.objects.create(
            slug=f"policy-{k:02d}",
            name=f"Policy {k:02d} of a longer name" if k % 5 == 0 else f"Policy {k:02d}",
            organization=makers[k % len(makers)],
            owner=owner,
            license="MIT",
            open_weights=k % 3 == 0,
            endpoint_url=f"ws://10.0.0.{k}:8000",
            status=Policy.Status.ACTIVE,
        )
        for k in range(n_policies)
    ]
    robots = []
    for k in range(n_labs):
        org = Organization.objects.create(name=f"Lab org {k}", slug=f"lab-org-{k}")
        lab = Lab.objects.create(name=f"Lab {k}", slug=f"lab-{k}", organization=org)
        platform = "droid" if k % 2 == 0 else "droid:franka"
        robots.append((lab, Robot.objects.create(lab=lab, name="real", platform=platform)))
        robots.append((lab, Robot.objects.create(lab=lab, name="sim", platform="replica:tabletop-v1")))
    strength = rng.normal(0.0, 1.0, n_policies)
    replica_strength = strength + rng.normal(0.0, 0.4, n_policies)
    now = timezone.now()
    sessions, preferences = [], []
    categories = ("pick-place", "drawer", "wipe", "")
    for n in range(n_comparisons):
        lab, robot = robots[n % len(robots)]
        i, j = rng.choice(n_policies, 2, replace=False)
        theta = replica_strength if robot.platform.startswith("replica:") else strength
        tie = rng.random() < 0.1
        choice = "tie" if tie else ("A" if rng.random() < 1 / (1 + np.exp(theta[j] - theta[i])) else "B")
        session = EvaluationSession(
            lab=lab,
            robot=robot,
            task="benchmark task",
            task_category=categories[n % len(categories)],
            policy_a=policies[i],
            policy_b=policies[j],
            pair_probability=0.01,
            state=EvaluationSession.State.SUBMITTED,
            lease_expires_at=now,
            ended_at=now,
        )
        sessions.append(session)
        preferences.append(
            Preference(
                session=session,
                choice=choice,
                reason="benchmark",
                policy_a=policies[i],
                policy_b=policies[j],
                lab=lab,
                task_category=session.task_category,
                progress_a=int(rng.integers(0, 101)),
                progress_b=int(rng.integers(0, 101)),
            )
        )
    EvaluationSession.objects.bulk_create(sessions, batch_size=2000)
    Preference.objects.bulk_create(preferences, batch_size=2000)
    tallies_rebuild()
    return [p.slug for p in policies]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policies", type=int, default=30)
    parser.add_argument("--labs", type=int, default=6)
    parser.add_argument("--comparisons", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="12 policies, 1500 comparisons, 5 renders")
    args = parser.parse_args()
    if args.quick:
        args.policies, args.comparisons, args.repeat = 12, 1500, 5

    with tempfile.TemporaryDirectory(prefix="arena-bench-pages-") as var:
        os.environ.pop("DATABASE_URL", None)
        os.environ["ARENA_VAR_DIR"] = var
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            check=True,
            env=os.environ,
        )
        import django

        django.setup()
        from django.test import Client

        from arena.services.ranking import ranking_snapshot_create

        t0 = time.perf_counter()
        slugs = build(args.policies, args.labs, args.comparisons)
        print(
            f"built {args.comparisons} comparisons, {args.policies} policies in {time.perf_counter() - t0:.1f} s"
        )
        t0 = time.perf_counter()
        snapshot = ranking_snapshot_create()
        refit = time.perf_counter() - t0
        boards = snapshot.slices["boards"]
        agreement = snapshot.slices["agreement"]
        print(
            f"refit: {refit * 1000:.0f} ms in all, of which {len(boards)} slices and the agreement "
            f"{snapshot.slices['fit_seconds'] * 1000:.0f} ms (r = {agreement['pearson']:.2f}, "
            f"MMRV = {agreement['mmrv']:.3f})"
        )
        pages = {
            "leaderboard": "/leaderboard/",
            "leaderboard, real robots": "/leaderboard/?view=real",
            "leaderboard, replica": "/leaderboard/?view=replica",
            "leaderboard, robot droid:franka": "/leaderboard/?view=robot:droid:franka",
            "leaderboard, category wipe": "/leaderboard/?view=category:wipe",
            "leaderboard, search + sort": "/leaderboard/?q=maker+1&sort=score&dir=asc&open=1",
            "methodology": "/methodology/",
            "policy page": f"/policies/{slugs[0]}/",
        }
        client = Client(HTTP_HOST="127.0.0.1")
        print(f"\n{'page':34} {'bytes':>8} {'median ms':>10} {'max ms':>8}")
        for name, path in pages.items():
            times, size = [], 0
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, (path, response.status_code)
                size = len(response.content)
            print(f"{name:34} {size:>8} {statistics.median(times):>10.1f} {max(times):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
