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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from django.core.management import call_command

from arena.models import EvaluationSession
from arena.tasks import ranking_refit
from tests.api.actors import (
    Actor,
    activate,
    make_actor,
    refits_deferred,
    register_policy,
    register_robot,
    report_both,
    request_session,
)

T = TypeVar("T")
_BUILT: dict[str, tuple[Path, object]] = {}
"""Key of a league built in this process -> (the dump of its rows, what its build returned)."""

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


def league_actors() -> tuple[Actor, Actor, list[Actor]]:
    """Who plays a league: Olivia (Acme Robotics) and Bruno (Beta Robotics), and the Berkeley and Stanford labs."""
    olivia = make_actor("owner", owner="olivia", organization="Acme Robotics")
    bruno = make_actor("bruno", owner="bruno", organization="Beta Robotics")
    labs = [
        make_actor("lab1", lab="Berkeley Lab", organization="Berkeley"),
        make_actor("lab2", lab="Stanford Lab", organization="Stanford"),
    ]
    return olivia, bruno, labs


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


def built_once(key: str, build: Callable[[], T]) -> T:
    """``build()`` the first time ``key`` is asked for in this process; later, the rows it wrote reloaded from a
    dump of them (``dumpdata``/``loaddata``: the same ids, keys, verdicts and snapshots; loaddata resets the
    sequences), and the same returned value.

    For transactional tests (a live server reads committed rows, and each test's end empties the database), whose
    leagues would otherwise be played again, verdict by verdict, for every test. Only the users and the arena's
    own rows are kept: a build must not depend on anything else stored."""
    if key in _BUILT:
        dump, value = _BUILT[key]
        call_command("loaddata", str(dump), verbosity=0)
        return value  # type: ignore[return-value]
    value = build()
    dump = Path(tempfile.mkdtemp(prefix="arena-league-")) / f"{key}.json"
    call_command("dumpdata", "auth.user", "arena", natural_foreign=True, output=str(dump), verbosity=0)
    _BUILT[key] = (dump, value)
    return value
