"""How far can coordinated labs push a policy? Simulated attacks on a 30-policy board, without and with the
server's defences.

Board: 30 policies with log-strengths evenly spaced over [-1.5, 1.5] nats (Davidson ties, nu = 0.8), pairs drawn
uniformly by the server (labs cannot choose them), 10 honest labs with 300 comparisons each, each its own
organization. Attackers want the policy ranked 21st to climb: on every comparison that involves it they vote for
it, and they vote honestly on all others (so their overall agreement with the consensus stays high). Scenarios:
1, 3 and 5 colluding labs with 300 comparisons each (each its own organization: the caps cannot see them), 3
colluders of one organization, and 30 Sybil lab keys with 30 comparisons each (each its own organization).

Undefended: the fit on raw counts. Defended: what the server's refit uses (:func:`ranking.lab_defence`: trust
ramp, cohort test, lab and organization caps). Reported per scenario over seeds (mean +/- standard error):
TPR (share of attacker labs flagged by the agreement test or a cohort), FPR (share of honest labs flagged), the
target's rank gain (places climbed, by score) without and with the defences (and the largest with them), and Kendall tau of the fitted
scores with the truth, without and with (``attack = none``: the honest board's cost of the defences).

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


@dataclass(frozen=True)
class Attack:
    name: str
    n_labs: int
    per_lab: int
    one_org: bool = False


ATTACKS = (
    Attack("none", 0, 0),
    Attack("1 colluder", 1, PER_LAB),
    Attack("3 colluders", 3, PER_LAB),
    Attack("3 coll., 1 org", 3, PER_LAB, one_org=True),
    Attack("5 colluders", 5, PER_LAB),
    Attack("30 sybils", 30, 30),
)


def _pairs(m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, N_POLICIES, m)
    b = (a + rng.integers(1, N_POLICIES, m)) % N_POLICIES
    return a, b


def board(attack: Attack, rng: np.random.Generator):
    """(a, b, outcome, lab, org, is_attacker_lab, theta, target) of one simulated board."""
    theta = np.linspace(1.5, -1.5, N_POLICIES)
    target = TARGET_RANK - 1
    parts = []
    for lab in range(HONEST_LABS + attack.n_labs):
        per_lab = PER_LAB if lab < HONEST_LABS else attack.per_lab
        a, b = _pairs(per_lab, rng)
        y = simulate_outcomes(theta[a] - theta[b], rng, NU)
        if lab >= HONEST_LABS:
            y = np.where(a == target, 1.0, np.where(b == target, 0.0, y))
        org = HONEST_LABS if attack.one_org and lab >= HONEST_LABS else lab
        parts.append((a, b, y, np.full(per_lab, lab), np.full(per_lab, org)))
    a, b, y, lab, org = (np.concatenate(column) for column in zip(*parts, strict=True))
    attacker = np.arange(HONEST_LABS + attack.n_labs) >= HONEST_LABS
    return a, b, y, lab, org, attacker, theta, target


def _rank_of(scores: np.ndarray, item: int) -> int:
    return 1 + int(np.sum(scores > scores[item]))


def run(attack: Attack, seeds: int) -> dict[str, tuple[float, float]]:
    """Per statistic, (mean, standard error) over ``seeds`` boards."""
    columns: dict[str, list[float]] = {k: [] for k in ("tpr", "fpr", "gain", "gain_def", "tau", "tau_def")}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        a, b, y, lab, org, attacker, theta, target = board(attack, rng)
        raw = ranking.fit(a, b, y, N_POLICIES)
        defence = ranking.lab_defence(a, b, y, N_POLICIES, lab, org=org, seed=seed)
        defended = ranking.fit(a, b, y, N_POLICIES, weights=defence.weights)
        columns["gain"].append(TARGET_RANK - _rank_of(raw.scores, target))
        columns["gain_def"].append(TARGET_RANK - _rank_of(defended.scores, target))
        columns["tau"].append(kendalltau(raw.scores, theta).statistic)
        columns["tau_def"].append(kendalltau(defended.scores, theta).statistic)
        in_cohort = {m for c in defence.cohorts for m in c.labs}
        flagged = np.array(
            [defence.agreement[k].flagged or k in in_cohort for k in range(attacker.size)], dtype=bool
        )
        if attacker.any():
            columns["tpr"].append(flagged[attacker].mean())
        columns["fpr"].append(flagged[~attacker].mean())
    out = {k: _mean_se(v) for k, v in columns.items()}
    out["max_gain_def"] = (float(max(columns["gain_def"])), 0.0)
    return out


def _mean_se(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0


def _cell(value: tuple[float, float], digits: int) -> str:
    mean, se = value
    return "-" if not np.isfinite(mean) else f"{mean:.{digits}f}±{se:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds per scenario")
    parser.add_argument("--seeds", type=int, default=0, help="seeds per scenario (default 20, quick 3)")
    args = parser.parse_args()
    seeds = args.seeds or (3 if args.quick else 20)
    print(f"target: the policy ranked {TARGET_RANK} of {N_POLICIES}; mean ± s.e. over {seeds} seeds")
    header = ("attack", "TPR", "FPR", "gain", "gain+def", "max+def", "tau", "tau+def")
    print(f"{header[0]:<16}" + "".join(f"{h:>13}" for h in header[1:]))
    for attack in ATTACKS:
        r = run(attack, seeds)
        cells = [
            _cell(r["tpr"], 2),
            _cell(r["fpr"], 3),
            _cell(r["gain"], 1),
            _cell(r["gain_def"], 1),
            f"{r['max_gain_def'][0]:.0f}",
            _cell(r["tau"], 3),
            _cell(r["tau_def"], 3),
        ]
        print(f"{attack.name:<16}" + "".join(f"{c:>13}" for c in cells))


if __name__ == "__main__":
    main()
