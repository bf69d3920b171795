"""Which policies may meet on a robot, and which pair of them to assign next.

Eligibility is decided here from stored data only (health comes from stored check results; nothing is probed
at assignment time). The choice among eligible pairs is delegated to ``ranking.PairSampler``, fed with the
comparison counts of the latest ranking snapshot.

The public comparison log holds those counts, and this code is open, so the sampler's state also includes a
secret (``ARENA_ASSIGNMENT_SECRET``): the pair probabilities are perturbed with normal draws seeded by
``HMAC(secret, snapshot, eligible policies)`` and the pair itself is drawn with ``HMAC(secret, session id)``.
No pair is more than ``ARENA_PAIR_MAX_RATIO`` times as likely as under uniform sampling and a share
``ARENA_PAIR_EXPLORATION`` of assignments is uniform, so a lab that reproduces everything else still guesses
its policies at most that factor better than chance (``benchmarks/assignment_leak.py`` measures it). The draw is
reproducible by whoever holds the secret, so an operator can audit any stored assignment.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from arena.models import Lab, Policy, RankingSnapshot, Robot
from ranking import PairSampler

# Policies that read the simulator's privileged state (the scripted baselines) only run on replica robots.
REPLICA_PREFIX = "replica:"


@dataclass(frozen=True)
class PairChoice:
    policy_a: Policy
    policy_b: Policy
    probability: float


def eligible_policies(*, lab: Lab, robot: Robot) -> list[Policy]:
    """Active policies the robot can run, excluding those the lab has a stake in: its organization's, and
    those whose owner belongs to the lab or to the lab's organization."""
    candidates = (
        Policy.objects.filter(status=Policy.Status.ACTIVE)
        .exclude(organization_id=lab.organization_id)
        .exclude(owner__organizations=lab.organization_id)
        .exclude(owner__labs=lab.pk)
        .order_by("pk")
    )
    return [p for p in candidates if robot_meets(robot, p)]


def robot_meets(robot: Robot, policy: Policy) -> bool:
    if policy.req_platform and policy.req_platform != robot.platform:
        return False
    if policy.req_replica_state and not robot.platform.startswith(REPLICA_PREFIX):
        return False
    if policy.req_n_external_cameras > robot.n_external_cameras:
        return False
    if policy.req_wrist_camera and not robot.has_wrist_camera:
        return False
    if policy.req_stereo_camera and not robot.has_stereo_camera:
        return False
    return not (policy.req_action_space and policy.req_action_space not in robot.action_spaces)


def pair_choose(*, policies: list[Policy], session_id: uuid.UUID) -> PairChoice | None:
    """Pick two different policies with the ranking's sampler for session ``session_id``; None when fewer than
    two are eligible. ``probability`` is the exact probability of the unordered pair under the server's (secret)
    distribution, for inverse-propensity weights.

    Slot order (A/B) is randomised separately by the caller.
    """
    if len(policies) < 2:
        return None
    probabilities = _pair_probabilities(policies)
    flat = probabilities.ravel()
    rng = np.random.default_rng(_secret_seed("draw", str(session_id)))
    index = int(rng.choice(flat.size, p=flat / flat.sum()))
    i, j = divmod(index, len(policies))
    probability = float(probabilities[i, j] + probabilities[j, i])
    return PairChoice(policy_a=policies[i], policy_b=policies[j], probability=probability)


# The sampler refits Bradley-Terry over the snapshot's counts to score the pairs (~10 ms for 60 policies), so
# its probabilities are kept per (snapshot version, eligible policies) until a new snapshot appears.
_PROBABILITIES: OrderedDict[tuple[tuple | None, tuple[int, ...]], np.ndarray] = OrderedDict()
_PROBABILITIES_MAX = 64
_PROBABILITIES_LOCK = threading.Lock()


def _pair_probabilities(policies: list[Policy]) -> np.ndarray:
    """(n, n) probabilities of ``PairSampler.pair_probabilities`` for ``policies`` and the newest snapshot."""
    newest = RankingSnapshot.objects.order_by("-version").values_list("version", "data_hash").first()
    key = (newest, tuple(p.pk for p in policies))
    with _PROBABILITIES_LOCK:
        cached = _PROBABILITIES.get(key)
        if cached is not None:
            _PROBABILITIES.move_to_end(key)
            return cached
    a, b, weights = _history(policies, None if newest is None else newest[0])
    probabilities = pair_distribution(
        n_items=len(policies),
        winners=a,
        losers=b,
        counts=weights,
        perturbation_seed=_secret_seed("perturb", repr(key)),
    )
    with _PROBABILITIES_LOCK:
        _PROBABILITIES[key] = probabilities
        while len(_PROBABILITIES) > _PROBABILITIES_MAX:
            _PROBABILITIES.popitem(last=False)
    return probabilities


def pair_distribution(
    *,
    n_items: int,
    winners: np.ndarray,
    losers: np.ndarray,
    counts: np.ndarray,
    perturbation_seed: int | None,
) -> np.ndarray:
    """(n, n) slot-order probabilities of the server's sampler over ``n_items`` policies with these weighted
    (winner, loser) rows, perturbed with normal draws from ``perturbation_seed`` (None: no perturbation, the
    best a party without the secret can compute)."""
    sampler = PairSampler(
        n_items,
        exploration=settings.ARENA_PAIR_EXPLORATION,
        max_ratio=settings.ARENA_PAIR_MAX_RATIO,
        jitter=settings.ARENA_PAIR_JITTER,
    )
    if len(winners):
        sampler.update_many(winners, losers, np.ones(len(winners)), weights=counts)
    if perturbation_seed is None:
        return sampler.pair_probabilities(perturbation=np.zeros((n_items, n_items)))
    perturbation = np.random.default_rng(perturbation_seed).standard_normal((n_items, n_items))
    return sampler.pair_probabilities(perturbation=perturbation)


def _secret_seed(purpose: str, message: str) -> int:
    """A 256-bit seed no one without ``ARENA_ASSIGNMENT_SECRET`` can compute."""
    digest = hmac.new(
        settings.ARENA_ASSIGNMENT_SECRET.encode(), f"{purpose}:{message}".encode(), hashlib.sha256
    ).digest()
    return int.from_bytes(digest, "big")


def _history(policies: list[Policy], version: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Win counts between the given policies from snapshot ``version``, as weighted (winner, loser) rows."""
    if version is None:
        snapshot = None
    else:
        snapshot = RankingSnapshot.objects.only("matrices").filter(version=version).first()
    empty = np.zeros(0, dtype=np.int64)
    if snapshot is None:
        return empty, empty, np.zeros(0)
    index = {slug: k for k, slug in enumerate(snapshot.matrices.get("slugs", []))}
    local = [index.get(p.slug) for p in policies]
    known = [(k, g) for k, g in enumerate(local) if g is not None]
    if len(known) < 2:
        return empty, empty, np.zeros(0)
    rows = np.array([k for k, _ in known])
    cols = np.array([g for _, g in known])
    wins = np.asarray(snapshot.matrices["wins"], dtype=float)[np.ix_(cols, cols)]
    winner, loser = np.nonzero(wins > 0)
    return rows[winner], rows[loser], wins[winner, loser]
