"""A league played on real robots and in the replica, for the leaderboard's slices and the agreement panel.

Olivia (Acme Robotics) and Bruno (Beta Robotics) own the policies of ``tests/web/league.py``; the Berkeley
lab runs a real DROID robot and a replica, the Stanford lab a real Franka ("droid:franka") and a replica.
Verdicts follow ``TRUE_STRENGTH`` on real robots and a distorted copy in the replica (two policies swapped),
so the two rankings agree only partly. One refit at the end, to keep the build short.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from arena.models import EvaluationSession
from arena.tasks import ranking_refit, refit_lock
from tests.api.actors import Actor, register_robot, report_both, request_session
from tests.web.league import CATEGORIES, TASKS, TRUE_STRENGTH, register_all

REPLICA_STRENGTH = {**TRUE_STRENGTH, "beta-act": 1160, "pi0-fast-droid": 1040}
ROBOTS = {  # lab index -> (real robot name, real platform)
    0: ("franka-1", "droid"),
    1: ("franka-2", "droid:franka"),
}


@dataclass
class SliceLeague:
    slugs: list[str]
    sessions: int
    labs: list[Actor]


def _verdict(a: str, b: str, strength: dict[str, int], rng: random.Random) -> str:
    if rng.random() < 0.1:
        return "tie"
    p_a = 1 / (1 + math.pow(10, (strength[b] - strength[a]) / 400))
    return "A" if rng.random() < p_a else "B"


def _play(lab: Actor, robot: str, strength: dict[str, int], category: str, rng: random.Random) -> None:
    response = request_session(lab, robot=robot, task=TASKS[category], task_category=category)
    assert response.status_code == 201, response.json()
    session_id = response.json()["id"]
    report_both(lab, session_id)
    stored = EvaluationSession.objects.select_related("policy_a", "policy_b").get(pk=session_id)
    choice = _verdict(stored.policy_a.slug, stored.policy_b.slug, strength, rng)
    response = lab.post(f"/api/v1/sessions/{session_id}/preference/", {"choice": choice, "reason": "seen"})
    assert response.status_code == 201, response.json()


def build_slice_league(
    *, olivia: Actor, bruno: Actor, labs: list[Actor], sessions: int = 96, seed: int = 5
) -> SliceLeague:
    """All policies of ``TRUE_STRENGTH`` (none late), ``sessions`` sessions alternating real and replica,
    round-robin over ``labs`` and the task categories, then one refit."""
    slugs = list(TRUE_STRENGTH)
    register_all(olivia, bruno, slugs)
    for k, lab in enumerate(labs):
        name, platform = ROBOTS[k % len(ROBOTS)]
        register_robot(lab, name=name, platform=platform)
        register_robot(lab, name=f"replica-{k}", platform="replica:tabletop-v1")
    rng = random.Random(seed)
    # Holding the refit lock makes each preference's refit leave the dirty mark and return (what happens while
    # another refit runs); one refit at the end then includes everything.
    with refit_lock() as held:
        assert held
        for n in range(sessions):
            k = n % len(labs)
            replica = (n // len(labs)) % 2 == 1
            robot = f"replica-{k}" if replica else ROBOTS[k % len(ROBOTS)][0]
            strength = REPLICA_STRENGTH if replica else TRUE_STRENGTH
            _play(labs[k], robot, strength, CATEGORIES[n % len(CATEGORIES)], rng)
    ranking_refit()
    return SliceLeague(slugs=slugs, sessions=sessions, labs=labs)
