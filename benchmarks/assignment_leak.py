"""How well can a lab guess which policy it was given, from public data alone? Before vs after, vs chance.

A simulated lab holds everything public: the comparison log (every counted pair and outcome), the public policy
list (exact requirements before, robot classes only after) and the open-source sampler with its published
configuration. In each session it sees its two slots' exact requirements (the session view shows them) and
names the policy it believes is in slot A and the one in slot B, and the unordered pair.

Regimes:
- ``old``: the previous server (``PairSampler`` defaults, no secret, no cap; exact requirements published). The
  adversary computes the server's distribution exactly.
- ``new``: the server as configured in ``arena.settings`` (``arena.pairing.pair_distribution`` with a secret
  perturbation, the probability cap and the uniform floor; coarse public requirements). Adversaries: ``public``
  (the same code without the secret: perturbation zero), ``oracle`` (knows the secret: the bound the cap
  guarantees, ``max_ratio`` x chance), ``public + own reveals`` (also maps exact requirements to policies it
  saw revealed after its own earlier votes: the channel the coarse public list cannot close).

Each run: 7 eligible policies (true strengths ~ N(0, 1.5^2)) whose exact requirements are drawn from 8
combinations (collisions happen), a public history of 40 comparisons drawn by the regime's own sampler, then
300 sessions, each outcome added to the log (a refit after every preference). Accuracy is pooled over seeds
with a 95% Wilson interval. ``pair p reproduced``: the share of sessions in which the adversary's distribution
gives the drawn pair exactly the probability the server used (the old server: always; the new one: whenever
that pair sits at the published cap); ``mean TV``: the total variation distance between the two distributions
over unordered pairs, averaged over sessions.

Run: ``python -m benchmarks.assignment_leak [--quick] [--seeds N]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
import django  # noqa: E402

django.setup()

from arena.pairing import pair_distribution  # noqa: E402
from ranking import PairSampler  # noqa: E402

N_POLICIES = 7
HISTORY = 40
FINGERPRINTS = [(res, horizon, dim) for res in (224, 256) for horizon in (10, 16) for dim in (7, 8)]


@dataclass
class Tally:
    slot_hits: int = 0
    slots: int = 0
    pair_hits: int = 0
    pairs: int = 0
    reproduced: int = 0
    """Sessions in which the adversary's belief gave the drawn pair exactly the server's probability."""
    total_variation: float = 0.0
    """Sum over sessions of the total variation distance between belief and server (unordered pairs)."""

    def add(self, guess_a: int, guess_b: int, guess_pair: tuple[int, int], a: int, b: int) -> None:
        self.slot_hits += int(guess_a == a) + int(guess_b == b)
        self.slots += 2
        self.pair_hits += int(set(guess_pair) == {a, b})
        self.pairs += 1

    def compare(self, belief: np.ndarray, truth: np.ndarray, a: int, b: int) -> None:
        """How close the belief came to the server's (n, n) slot-order distribution."""
        unordered_belief, unordered_truth = belief + belief.T, truth + truth.T
        self.reproduced += int(abs(unordered_belief[a, b] - unordered_truth[a, b]) < 1e-9)
        upper = np.triu_indices(len(truth), 1)
        self.total_variation += 0.5 * float(np.abs(unordered_belief[upper] - unordered_truth[upper]).sum())


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """(estimate, low, high) of a binomial proportion, 95% Wilson interval."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def old_distribution(wins: np.ndarray) -> np.ndarray:
    """The previous server's rule: default PairSampler over the snapshot's win counts, nothing secret."""
    sampler = PairSampler(len(wins))
    winner, loser = np.nonzero(wins > 0)
    if winner.size:
        sampler.update_many(winner, loser, np.ones(winner.size), weights=wins[winner, loser])
    return sampler.pair_probabilities()


def new_distribution(wins: np.ndarray, seed: int | None) -> np.ndarray:
    winner, loser = np.nonzero(wins > 0)
    return pair_distribution(
        n_items=len(wins), winners=winner, losers=loser, counts=wins[winner, loser], perturbation_seed=seed
    )


def guess(
    probabilities: np.ndarray, consistent_a: np.ndarray, consistent_b: np.ndarray
) -> tuple[int, int, tuple[int, int]]:
    """MAP guesses of slot A, slot B and the pair from the believed (n, n) slot-order probabilities, restricted
    to policies whose known requirements agree with each slot's."""
    posterior = probabilities * consistent_a[:, None] * consistent_b[None, :]
    if posterior.sum() == 0:
        posterior = probabilities
    a = int(np.argmax(posterior.sum(axis=1)))
    b = int(np.argmax(posterior.sum(axis=0)))
    i, j = divmod(int(np.argmax(posterior + posterior.T)), len(probabilities))
    return a, b, (i, j)


def run(regime: str, seed: int, sessions: int) -> dict[str, Tally]:
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 1.5, N_POLICIES)
    fingerprint = np.array([rng.integers(len(FINGERPRINTS)) for _ in range(N_POLICIES)])
    wins = np.zeros((N_POLICIES, N_POLICIES))
    secret = np.random.default_rng([seed, 99])  # the server's secret stream: never shown to adversaries

    def server() -> np.ndarray:
        if regime == "old":
            return old_distribution(wins)
        return new_distribution(wins, int(secret.integers(2**63)))

    def play(probabilities: np.ndarray) -> tuple[int, int]:
        flat = probabilities.ravel()
        i, j = divmod(int(rng.choice(flat.size, p=flat / flat.sum())), N_POLICIES)
        if rng.random() < 0.5:  # the slot order is drawn apart, uniformly
            i, j = j, i
        if rng.random() < 1.0 / (1.0 + np.exp(theta[j] - theta[i])):
            wins[i, j] += 1
        else:
            wins[j, i] += 1
        return i, j

    for _ in range(HISTORY):
        play(server())
    adversaries: dict[str, Callable[[np.ndarray], np.ndarray]]
    if regime == "old":
        adversaries = {"public": lambda truth: old_distribution(wins)}
    else:
        adversaries = {
            "public": lambda truth: new_distribution(wins, None),
            "oracle (knows the secret)": lambda truth: truth,
            "public + own reveals": lambda truth: new_distribution(wins, None),
        }
    tallies = {name: Tally() for name in adversaries}
    revealed: dict[int, set[int]] = {}  # fingerprint -> policies the lab saw revealed with it
    everyone = np.ones(N_POLICIES, dtype=bool)
    for _ in range(sessions):
        truth = server()
        beliefs = {name: believe(truth) for name, believe in adversaries.items()}
        a, b = play(truth)
        for name, belief in beliefs.items():
            if regime == "old":  # exact requirements are public: keep the policies that match each slot
                consistent_a, consistent_b = fingerprint == fingerprint[a], fingerprint == fingerprint[b]
            elif name == "public + own reveals":
                consistent_a = _from_reveals(revealed, fingerprint, fingerprint[a])
                consistent_b = _from_reveals(revealed, fingerprint, fingerprint[b])
            else:
                consistent_a = consistent_b = everyone
            tallies[name].add(*guess(belief, consistent_a, consistent_b), a, b)
            tallies[name].compare(belief, truth, a, b)
        revealed.setdefault(int(fingerprint[a]), set()).add(a)
        revealed.setdefault(int(fingerprint[b]), set()).add(b)
    return tallies


def _from_reveals(revealed: dict[int, set[int]], fingerprint: np.ndarray, seen: int) -> np.ndarray:
    """Policies that may have fingerprint ``seen``: those revealed with it, plus any never revealed yet."""
    known = set().union(*revealed.values()) if revealed else set()
    return np.array(
        [k in revealed.get(int(seen), set()) or k not in known for k in range(len(fingerprint))], dtype=bool
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 seeds x 100 sessions")
    parser.add_argument("--seeds", type=int, default=None)
    args = parser.parse_args(argv)
    seeds = args.seeds or (3 if args.quick else 10)
    sessions = 100 if args.quick else 300
    from django.conf import settings

    n_pairs = N_POLICIES * (N_POLICIES - 1) // 2
    print(
        f"{N_POLICIES} eligible policies, {seeds} seeds x {sessions} sessions; server: max_ratio "
        f"{settings.ARENA_PAIR_MAX_RATIO}, exploration {settings.ARENA_PAIR_EXPLORATION}, jitter "
        f"{settings.ARENA_PAIR_JITTER}"
    )
    print(
        f"{'regime':7} {'adversary':28} {'slot named':>24} {'pair named':>24} {'pair p reproduced':>18} "
        f"{'mean TV':>8}"
    )
    for regime in ("old", "new"):
        pooled: dict[str, Tally] = {}
        for seed in range(seeds):
            for name, tally in run(regime, seed, sessions).items():
                total = pooled.setdefault(name, Tally())
                total.slot_hits += tally.slot_hits
                total.slots += tally.slots
                total.pair_hits += tally.pair_hits
                total.pairs += tally.pairs
                total.reproduced += tally.reproduced
                total.total_variation += tally.total_variation
        for name, tally in pooled.items():
            slot = wilson(tally.slot_hits, tally.slots)
            pair = wilson(tally.pair_hits, tally.pairs)
            print(
                f"{regime:7} {name:28} {slot[0]:8.3f} [{slot[1]:.3f}, {slot[2]:.3f}] "
                f"{pair[0]:8.3f} [{pair[1]:.3f}, {pair[2]:.3f}] {tally.reproduced / tally.pairs:18.3f} "
                f"{tally.total_variation / tally.pairs:8.3f}"
            )
    ratio = settings.ARENA_PAIR_MAX_RATIO
    print(f"{'chance':36} {1 / N_POLICIES:8.3f} {'':16} {1 / n_pairs:8.3f}")
    print(f"{'cap bound (max_ratio x chance)':36} {ratio / N_POLICIES:8.3f} {'':16} {ratio / n_pairs:8.3f}")


if __name__ == "__main__":
    main()
