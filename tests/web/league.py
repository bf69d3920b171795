"""A small league of policies with real verdicts, built through the HTTP API by the named actors.

Two owners (Olivia at Acme Robotics, Bruno at Beta Robotics) register policies; two evaluator labs (Berkeley,
Stanford) each register a robot and run sessions. The pair is assigned by the arena's sampler; the lab's
verdict follows a hidden true strength with noise, so the fitted ranking resembles ``TRUE_STRENGTH`` without
matching it.
The ranking is refitted every ``refit_every`` sessions (and only then), so the league has several snapshots.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from arena.models import EvaluationSession
from arena.tasks import ranking_refit
from tests.api.actors import (
    Actor,
    activate,
    refits_deferred,
    register_policy,
    register_robot,
    report_both,
    request_session,
)

TRUE_STRENGTH = {  # Elo-like points
    "atlas-vla": 1250,
    "pi0-fast-droid": 1150,
    "beta-act": 1050,
    "diffusion-droid": 950,
    "octo-droid": 900,
    "rt1-droid": 750,
}
OWNED_BY_BRUNO = {"beta-act"}
CATEGORIES = ("pick-place", "drawer", "wipe")
TASKS = {
    "pick-place": "put the marker in the cup",
    "drawer": "close the top drawer",
    "wipe": "wipe the table",
}


@dataclass
class League:
    slugs: list[str]
    sessions: int


def register_all(olivia: Actor, bruno: Actor, slugs: list[str]) -> None:
    for slug in slugs:
        register_policy(
            bruno if slug in OWNED_BY_BRUNO else olivia,
            slug,
            endpoint_url=f"ws://policy-host.example:{8100 + len(slug)}",
        )
        activate(slug)


def verdict(a: str, b: str, rng: random.Random) -> str:
    """The lab's choice between slot A (policy ``a``) and slot B: ties 10% of the time, else Bradley-Terry."""
    if rng.random() < 0.1:
        return "tie"
    p_a = 1 / (1 + math.pow(10, (TRUE_STRENGTH[b] - TRUE_STRENGTH[a]) / 400))
    return "A" if rng.random() < p_a else "B"


def play(lab: Actor, *, category: str, rng: random.Random) -> str:
    """One session from request to preference; returns the choice."""
    response = request_session(lab, task=TASKS[category], task_category=category)
    assert response.status_code == 201, response.json()
    session_id = response.json()["id"]
    report_both(lab, session_id)
    stored = EvaluationSession.objects.select_related("policy_a", "policy_b").get(pk=session_id)
    choice = verdict(stored.policy_a.slug, stored.policy_b.slug, rng)
    response = lab.post(
        f"/api/v1/sessions/{session_id}/preference/", {"choice": choice, "reason": "watched both"}
    )
    assert response.status_code == 201, response.json()
    return choice


def build_league(
    *,
    olivia: Actor,
    bruno: Actor,
    labs: list[Actor],
    sessions: int = 48,
    refit_every: int = 16,
    seed: int = 3,
) -> League:
    """Register the policies (the last one joins for the last four sessions, so it stays provisional),
    run ``sessions`` sessions round-robin over ``labs`` and refit the ranking along the way and at the end."""
    slugs = list(TRUE_STRENGTH)
    late = slugs[-1]
    register_all(olivia, bruno, slugs[:-1])
    for lab in labs:
        register_robot(lab)
    rng = random.Random(seed)
    with refits_deferred():
        for n in range(sessions):
            if n == sessions - 4:
                register_all(olivia, bruno, [late])
            play(labs[n % len(labs)], category=CATEGORIES[n % len(CATEGORIES)], rng=rng)
            if (n + 1) % refit_every == 0:
                ranking_refit()
    ranking_refit()
    return League(slugs=slugs, sessions=sessions)
