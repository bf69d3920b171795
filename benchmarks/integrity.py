"""How far can coordinated labs push a policy with today's defences? Simulated attacks on a 30-policy board.

Board: 30 policies with log-strengths evenly spaced over [-1.5, 1.5] nats (Davidson ties, nu = 0.8), pairs drawn
uniformly by the server (labs cannot choose them), 10 honest labs with 300 comparisons each. Attackers want the
policy ranked 21st to climb: on every comparison that involves it they vote for it, and they vote honestly on
all others (so their overall agreement with the consensus stays high). Scenarios: 1, 3 and 5 colluding labs with
300 comparisons each, and 30 Sybil lab keys with 30 comparisons each.

Defences measured (today's server): the lab share cap (:func:`ranking.cap_influence`, 0.5 of any policy's
weight) and the agreement test (:func:`ranking.lab_agreement`, flags at 0.05 / n_labs). Reported per scenario,
over seeds: TPR (share of attacker labs flagged), FPR (share of honest labs flagged), the target's rank gain
without and with the cap (places climbed, by score), and Kendall tau of the honest board with and without the
cap (``attack = none``).

Run: ``python -m benchmarks.integrity [--quick] [--seeds N]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau

import ranking
from ranking.simulate import simulate_outcomes

N_POLICIES = 30
TARGET_RANK = 21
HONEST_LABS = 10
PER_LAB = 300
NU = 0.8
MAX_SHARE = 0.5


@dataclass(frozen=True)
class Attack:
    name: str
    n_labs: int
    per_lab: int


ATTACKS = (
    Attack("none", 0, 0),
    Attack("1 colluder", 1, PER_LAB),
    Attack("3 colluders", 3, PER_LAB),
    Attack("5 colluders", 5, PER_LAB),
    Attack("30 sybils", 30, 30),
)


def _pairs(m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, N_POLICIES, m)
    b = (a + rng.integers(1, N_POLICIES, m)) % N_POLICIES
    return a, b


def board(attack: Attack, rng: np.random.Generator):
    """(a, b, outcome, lab, is_attacker_lab, theta, target) of one simulated board."""
    theta = np.linspace(1.5, -1.5, N_POLICIES)
    target = TARGET_RANK - 1
    parts = []
    for lab in range(HONEST_LABS + attack.n_labs):
        per_lab = PER_LAB if lab < HONEST_LABS else attack.per_lab
        a, b = _pairs(per_lab, rng)
        y = simulate_outcomes(theta[a] - theta[b], rng, NU)
        if lab >= HONEST_LABS:
            y = np.where(a == target, 1.0, np.where(b == target, 0.0, y))
        parts.append((a, b, y, np.full(per_lab, lab)))
    a, b, y, lab = (np.concatenate(column) for column in zip(*parts, strict=True))
    attacker = np.arange(HONEST_LABS + attack.n_labs) >= HONEST_LABS
    return a, b, y, lab, attacker, theta, target


def _rank_of(scores: np.ndarray, item: int) -> int:
    return 1 + int(np.sum(scores > scores[item]))


def run(attack: Attack, seeds: int) -> dict[str, float]:
    tpr, fpr, gain_raw, gain_capped, tau_raw, tau_capped = [], [], [], [], [], []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        a, b, y, lab, attacker, theta, target = board(attack, rng)
        raw = ranking.fit(a, b, y, N_POLICIES)
        weights = ranking.cap_influence(a, b, lab, max_share=MAX_SHARE)
        capped = ranking.fit(a, b, y, N_POLICIES, weights=weights)
        gain_raw.append(TARGET_RANK - _rank_of(raw.scores, target))
        gain_capped.append(TARGET_RANK - _rank_of(capped.scores, target))
        tau_raw.append(kendalltau(raw.scores, theta).statistic)
        tau_capped.append(kendalltau(capped.scores, theta).statistic)
        stats = ranking.lab_agreement(a, b, y, lab, N_POLICIES)
        flagged = np.array([stats[k].flagged for k in range(attacker.size)])
        if attacker.any():
            tpr.append(flagged[attacker].mean())
        fpr.append(flagged[~attacker].mean())
    return {
        "tpr": float(np.mean(tpr)) if tpr else float("nan"),
        "fpr": float(np.mean(fpr)),
        "gain_raw": float(np.median(gain_raw)),
        "gain_capped": float(np.median(gain_capped)),
        "tau_raw": float(np.mean(tau_raw)),
        "tau_capped": float(np.mean(tau_capped)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds per scenario")
    parser.add_argument("--seeds", type=int, default=0, help="seeds per scenario (default 20, quick 3)")
    args = parser.parse_args()
    seeds = args.seeds or (3 if args.quick else 20)
    print(f"target: the policy ranked {TARGET_RANK} of {N_POLICIES}; rank gain = places climbed (median)")
    print(f"{'attack':<14}{'TPR':>6}{'FPR':>7}{'gain':>6}{'gain+cap':>10}{'tau':>7}{'tau+cap':>9}")
    for attack in ATTACKS:
        r = run(attack, seeds)
        tpr = "-" if attack.n_labs == 0 else f"{r['tpr']:.2f}"
        print(
            f"{attack.name:<14}{tpr:>6}{r['fpr']:>7.3f}{r['gain_raw']:>6.0f}{r['gain_capped']:>10.0f}"
            f"{r['tau_raw']:>7.3f}{r['tau_capped']:>9.3f}"
        )


if __name__ == "__main__":
    main()
