"""``python -m benchmarks.refresh``: the ranking refit end to end from PostgreSQL holding 10^6 comparisons.

Builds (or reuses) a database ``arena_bench`` on the local Postgres with N stored comparisons between P policies
from L labs (sessions and preferences, inserted in SQL with ``generate_series``; outcomes drawn from known
Bradley-Terry strengths with ties; the running tallies rebuilt from them in one GROUP BY), then times
``ranking_snapshot_create``: reading the tallies,
the fit with sandwich CIs, lab integrity, category breakdowns and the snapshot write, in one call, several times.

    python -m benchmarks.refresh [--comparisons 1000000] [--policies 100] [--labs 20] [--repeat 3] [--rebuild]

Target: under 1 s per refit at 10^6 comparisons.
"""

from __future__ import annotations

import argparse
import os

# As in the served Celery workers (arena.serve): BLAS threads only slow the small matrices of a refit down.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "postgres://postgres@127.0.0.1:5432/arena_bench"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--labs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true", help="drop and rebuild the benchmark database")
    parser.add_argument("--quick", action="store_true", help="10^5 comparisons")
    parser.add_argument("--database-url", default=os.environ.get("ARENA_BENCH_DATABASE_URL", BENCH_DB))
    args = parser.parse_args()
    if args.quick:
        args.comparisons = 100_000

    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
    from arena.serve import drop_postgres_database, ensure_postgres_database

    if args.rebuild:
        drop_postgres_database(args.database_url)
    ensure_postgres_database(args.database_url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True, env=os.environ
    )
    import django

    django.setup()
    from django.db import connection

    from arena.models import Preference
    from arena.services.ranking import comparisons_aggregate, ranking_snapshot_create

    if args.rebuild or Preference.objects.count() != args.comparisons:
        t0 = time.perf_counter()
        build(connection, args.comparisons, args.policies, args.labs)
        print(f"built {args.comparisons:,} comparisons in {time.perf_counter() - t0:.1f} s")

    rows = []
    for k in range(args.repeat):
        t0 = time.perf_counter()
        data = comparisons_aggregate()
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        snapshot = ranking_snapshot_create()
        t_total = time.perf_counter() - t0
        rows.append((k + 1, t_read, t_total, snapshot.n_comparisons, len(data.a)))
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute(FULL_GROUP_BY)
        n_groups = cur.fetchone()[0]
    t_groupby = time.perf_counter() - t0
    print(
        f"\nrefit end to end from PostgreSQL: {args.comparisons:,} comparisons, {args.policies} policies, "
        f"{args.labs} labs, 3 task categories"
    )
    print(f"{'run':>3}  {'read tallies':>12}  {'refit total':>11}  {'comparisons':>11}  {'tally rows':>10}")
    for run, t_read, t_total, n, agg in rows:
        print(f"{run:>3}  {t_read:>10.3f} s  {t_total:>9.3f} s  {n:>11,}  {agg:>10,}")
    best = min(r[2] for r in rows)
    print(
        f"best refit: {best:.3f} s (target < 1 s: {'met' if best < 1 else 'MISSED'}); for comparison, one GROUP BY "
        f"over all preferences (what the tallies save) takes {t_groupby:.3f} s for {n_groups:,} groups; "
        f"RoboArena refits hourly"
    )
    return 0


FULL_GROUP_BY = """
    SELECT COUNT(*) FROM (
        SELECT policy_a_id, policy_b_id, choice, lab_id, task_category, COUNT(*), SUM(progress_a), SUM(progress_b)
        FROM arena_preference WHERE valid GROUP BY policy_a_id, policy_b_id, choice, lab_id, task_category
    ) g
"""


def build(connection, n: int, n_policies: int, n_labs: int) -> None:
    """Fresh principals, policies with known strengths, and n sessions each with a preference, all in SQL."""
    from arena.models import EvaluationSession, Lab, Organization, Policy, Preference, RankingSnapshot, Robot

    RankingSnapshot.objects.all().delete()
    Preference.objects.all().delete()
    EvaluationSession.objects.all().delete()
    Policy.objects.all().delete()
    Robot.objects.all().delete()
    Lab.objects.all().delete()
    Organization.objects.all().delete()
    from django.contrib.auth import get_user_model

    owner, _ = get_user_model().objects.get_or_create(username="bench-owner")
    org = Organization.objects.create(name="Bench Policies", slug="bench-policies")
    policies = Policy.objects.bulk_create(
        Policy(
            slug=f"policy-{k:04d}",
            name=f"Policy {k}",
            organization=org,
            owner=owner,
            endpoint_url=f"ws://127.0.0.1:{9000 + k}",
            status=Policy.Status.ACTIVE,
        )
        for k in range(n_policies)
    )
    labs = []
    for k in range(n_labs):
        lab_org = Organization.objects.create(name=f"Lab org {k}", slug=f"lab-org-{k}")
        labs.append(Lab.objects.create(name=f"Lab {k}", slug=f"lab-{k}", organization=lab_org))
    robots = [
        Robot.objects.create(lab=lab, name="r1", platform="droid", action_spaces=["joint_velocity"])
        for lab in labs
    ]
    pmin, pmax = policies[0].pk, policies[-1].pk
    lmin = labs[0].pk
    rmin = robots[0].pk
    with connection.cursor() as cur:
        cur.execute("SELECT setseed(0.42)")
        cur.execute(
            "CREATE TEMP TABLE strength AS SELECT id, (id - %s) * 4.0 / %s AS s FROM arena_policy",
            [pmin, max(1, pmax - pmin)],
        )
        cur.execute(
            """
            CREATE TEMP TABLE draw AS
            SELECT i,
                   %(pmin)s + floor(random() * %(np)s)::int AS a,
                   %(pmin)s + floor(random() * (%(np)s - 1))::int AS b0,
                   floor(random() * %(nl)s)::int AS l,
                   random() AS u,
                   (ARRAY['pick_place', 'push', 'stack'])[1 + floor(random() * 3)::int] AS cat
            FROM generate_series(1, %(n)s) AS i
            """,
            {"pmin": pmin, "np": n_policies, "nl": n_labs, "n": n},
        )
        cur.execute("UPDATE draw SET b0 = b0 + 1 WHERE b0 >= a")
        cur.execute(
            """
            INSERT INTO arena_evaluationsession
                (id, lab_id, robot_id, task, task_category, scene_notes, policy_a_id, policy_b_id,
                 pair_probability, state, lease_expires_at, created_at, abort_reason, abort_fault)
            SELECT md5(i::text)::uuid, %(lmin)s + l, %(rmin)s + l, 'benchmark task', cat, '', a, b0,
                   0.01, 'submitted', now(), now() - (i || ' seconds')::interval, '', ''
            FROM draw
            """,
            {"lmin": lmin, "rmin": rmin},
        )
        cur.execute(
            """
            INSERT INTO arena_preference
                (session_id, choice, reason, valid, created_at, policy_a_id, policy_b_id, lab_id, task_category,
                 progress_a, progress_b)
            SELECT md5(d.i::text)::uuid,
                   CASE WHEN d.u < 0.2 THEN 'tie'
                        WHEN (d.u - 0.2) / 0.8 < 1 / (1 + exp(sb.s - sa.s)) THEN 'A' ELSE 'B' END,
                   'benchmark', true, now() - (d.i || ' seconds')::interval, d.a, d.b0, %(lmin)s + d.l, d.cat,
                   (50 + 10 * sa.s)::int, (50 + 10 * sb.s)::int
            FROM draw d JOIN strength sa ON sa.id = d.a JOIN strength sb ON sb.id = d.b0
            """,
            {"lmin": lmin},
        )
        cur.execute("ANALYZE arena_preference")
    from arena.services.tallies import tallies_rebuild

    tallies_rebuild()


if __name__ == "__main__":
    sys.exit(main())
