"""The server's refit applies the defences against coordinated labs by default (issue 14 item 5): colluding
labs' votes on the policy they favour carry no weight in the published fit, the labs are flagged for staff
with the reason, and a new lab's votes ramp up. The board is stored as sessions and preferences (each lab of
its own organization), tallied as the server tallies them, then refitted by the Celery task."""

from __future__ import annotations

import csv
import io
import math
from datetime import timedelta

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

import ranking
from arena.models import EvaluationSession, Lab, Organization, Policy, Preference, RankingSnapshot, Robot
from arena.selectors.leaderboard import fitted_rows_csv
from arena.services.tallies import tallies_rebuild
from arena.tasks import ranking_refit
from ranking.simulate import simulate_outcomes

N_POLICIES = 8
TARGET = 6  # the second weakest
HONEST, COLLUDERS, PER_LAB, NEWCOMER_VOTES = 8, 3, 150, 12


def _store_board(seed: int) -> tuple[list[Policy], list[Lab]]:
    rng = np.random.default_rng(seed)
    owner = get_user_model().objects.create(username="board-owner")
    org = Organization.objects.create(name="Policies Inc", slug="policies-inc")
    policies = [
        Policy.objects.create(
            slug=f"policy-{k}",
            name=f"Policy {k}",
            organization=org,
            owner=owner,
            endpoint_url=f"ws://policy-host.example:{9000 + k}",
            status=Policy.Status.ACTIVE,
        )
        for k in range(N_POLICIES)
    ]
    strength = np.linspace(1.2, -1.2, N_POLICIES)
    sizes = [PER_LAB] * (HONEST + COLLUDERS) + [NEWCOMER_VOTES]
    labs, sessions, choices = [], [], []
    now = timezone.now()
    for k, size in enumerate(sizes):
        lab_org = Organization.objects.create(name=f"Lab org {k}", slug=f"lab-org-{k}")
        lab = Lab.objects.create(name=f"Lab {k}", slug=f"lab-{k}", organization=lab_org)
        robot = Robot.objects.create(lab=lab, name="r1", platform="droid", action_spaces=["joint_velocity"])
        labs.append(lab)
        a = rng.integers(0, N_POLICIES, size)
        b = (a + rng.integers(1, N_POLICIES, size)) % N_POLICIES
        y = simulate_outcomes(strength[a] - strength[b], rng, 0.8)
        if HONEST <= k < HONEST + COLLUDERS:
            y = np.where(a == TARGET, 1.0, np.where(b == TARGET, 0.0, y))
        for i, j, outcome in zip(a.tolist(), b.tolist(), y.tolist(), strict=True):
            sessions.append(
                EvaluationSession(
                    lab=lab,
                    robot=robot,
                    task="stack the cups",
                    task_category="stack",
                    policy_a=policies[i],
                    policy_b=policies[j],
                    pair_probability=0.05,
                    state=EvaluationSession.State.SUBMITTED,
                    lease_expires_at=now,
                    created_at=now - timedelta(seconds=len(sessions)),
                )
            )
            choices.append({1.0: "A", 0.0: "B", 0.5: "tie"}[outcome])
    EvaluationSession.objects.bulk_create(sessions)
    Preference.objects.bulk_create(
        Preference(
            session=s,
            choice=c,
            reason="r",
            policy_a=s.policy_a,
            policy_b=s.policy_b,
            lab=s.lab,
            task_category=s.task_category,
            progress_a=50,
            progress_b=50,
        )
        for s, c in zip(sessions, choices, strict=True)
    )
    tallies_rebuild()
    return policies, labs


@pytest.mark.django_db
def test_refit_leaves_out_colluders_votes_on_the_policy_they_favour() -> None:
    policies, labs = _store_board(seed=3)
    ranking_refit()
    snapshot = RankingSnapshot.objects.get()
    target = policies[TARGET].slug
    colluders = {lab.slug for lab in labs[HONEST : HONEST + COLLUDERS]}

    # staff see the cohort: in the snapshot's integrity data and on the labs themselves
    in_cohort = {
        slug for slug, e in snapshot.integrity.items() if any(c["policy"] == target for c in e["cohorts"])
    }
    assert colluders <= in_cohort
    for lab in Lab.objects.filter(slug__in=colluders):
        assert lab.integrity_flagged and f"favoured {target}" in lab.integrity_note

    # the fit gave their votes on the target no weight; the undefended fit of the same rows ranks it higher
    fitted = list(csv.DictReader(io.StringIO(fitted_rows_csv(snapshot.fitted_rows))))
    lab_number = {lab_id: k + 1 for k, lab_id in enumerate(snapshot.fitted_rows["labs"])}
    colluder_numbers = {str(lab_number[lab.pk]) for lab in labs if lab.slug in colluders}
    on_target = [
        r for r in fitted if r["lab"] in colluder_numbers and target in (r["policy_a"], r["policy_b"])
    ]
    assert on_target and all(float(r["weight"]) == 0.0 for r in on_target)
    a = np.array([int(r["a"]) for r in fitted])
    b = np.array([int(r["b"]) for r in fitted])
    y = np.array([float(r["outcome"]) for r in fitted])
    raw = ranking.fit(a, b, y, N_POLICIES, weights=np.array([float(r["count"]) for r in fitted]), anchor=0)
    index = {r["policy_a"]: int(r["a"]) for r in fitted}[target]
    raw_rank = 1 + int(np.sum(raw.scores > raw.scores[index]))
    published = {r["slug"]: r for r in snapshot.ratings}[target]
    published_rank = 1 + sum(r["score"] > published["score"] for r in snapshot.ratings)
    assert published_rank > raw_rank

    # the newcomer's few votes count partly; the established labs' fully
    trust = {slug: e["trust"] for slug, e in snapshot.integrity.items()}
    assert trust[labs[-1].slug] < 0.5
    assert all(math.isclose(trust[lab.slug], 1.0) for lab in labs[:HONEST])
    assert "cohort test" in snapshot.method
