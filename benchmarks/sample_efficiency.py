"""How many comparisons until the ranking is right: uniform pairs vs RoboArena's rule vs PairSampler.

Simulated tournaments: true log-strengths ~ N(0, spread^2); outcomes from Davidson's tie model (nu = 0.5);
each comparison is judged by one of 10 labs drawn uniformly, one of which (10%) is noisy and reports a coin
flip. After each checkpoint (a geometric grid) the ratings are refitted (``ranking.fit``, ties counted half,
same for every strategy) and Kendall's tau against the true strengths is recorded. Reported: comparisons
until tau first reaches 0.9 and until it stays >= 0.9 for the rest of the budget (median [IQR] over seeds;
runs that never get there count as beyond the budget, shown as ">budget").

Strategies: ``uniform`` (every pair equally likely); ``roboarena`` (one policy drawn with weight
(500 / (c + 1)) ** 0.8 by its comparison count c, the opponent uniformly among the others); ``ours``
(:class:`ranking.PairSampler`, whose outcomes are fed back in batches of ``n_items // 10`` comparisons, as
when that many evaluation sessions run concurrently); ``blinded`` (the same with the server's blinding defaults,
``ARENA_PAIR_MAX_RATIO`` 3, ``ARENA_PAIR_EXPLORATION`` 0.1, ``ARENA_PAIR_JITTER`` 0.3: no pair over 3x uniform).

Run: ``python -m benchmarks.sample_efficiency [--quick] [--seeds N] [--workers K]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau
from tqdm import tqdm

from ranking import PairSampler, aggregate
from ranking.fit import DEFAULT_RIDGE
from ranking.newton import newton_fit
from ranking.simulate import simulate_outcomes

TAU_TARGET = 0.9
NU = 0.5
N_LABS = 10
NOISY_LABS = 1
STRATEGIES = ("uniform", "roboarena", "ours", "blinded")
BLINDED = {"max_ratio": 3.0, "exploration": 0.1, "jitter": 0.3}  # arena.settings' ARENA_PAIR_* defaults


@dataclass(frozen=True)
class Scenario:
    n_items: int
    spread: float
    budget: int


FULL = [
    Scenario(10, 1.0, 4_000),
    Scenario(10, 2.0, 3_000),
    Scenario(30, 1.0, 12_000),
    Scenario(30, 2.0, 8_000),
    Scenario(100, 2.0, 12_000),
]
QUICK = [Scenario(10, 2.0, 2_000), Scenario(30, 2.0, 6_000)]


def _checkpoints(scenario: Scenario) -> np.ndarray:
    return np.unique(np.geomspace(scenario.n_items, scenario.budget, 60).astype(int))


def _uniform_pair(n: int, counts: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    i = int(rng.integers(n))
    return i, int((i + rng.integers(1, n)) % n)


def _roboarena_pair(n: int, counts: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    weight = (500.0 / (counts + 1.0)) ** 0.8
    i = int(rng.choice(n, p=weight / weight.sum()))
    return i, int((i + rng.integers(1, n)) % n)


def _judge(d: float, lab_noisy: bool, rng: np.random.Generator) -> float:
    if lab_noisy:
        return float(rng.random() < 0.5)
    return float(simulate_outcomes(np.array([d]), rng, nu=NU)[0])


def run(scenario: Scenario, strategy: str, seed: int) -> tuple[float, float]:
    """(comparisons to first reach tau >= 0.9, comparisons to stay there); inf when not within budget."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, scenario.spread, scenario.n_items)
    outcome_rng = np.random.default_rng(seed + 10_000)
    n = scenario.n_items
    counts = np.zeros(n)
    a, b, y = [], [], []
    sampler = None
    if strategy == "ours":
        sampler = PairSampler(n, seed=seed + 20_000)
    elif strategy == "blinded":
        sampler = PairSampler(n, seed=seed + 20_000, **BLINDED)
    batch = max(1, n // 10)
    pending: list[tuple[int, int, float]] = []
    draw: Callable[[int, np.ndarray, np.random.Generator], tuple[int, int]] = (
        _uniform_pair if strategy == "uniform" else _roboarena_pair
    )
    taus = []
    checkpoints = _checkpoints(scenario)
    done = 0
    for target in checkpoints:
        while done < target:
            if sampler is not None:
                i, j = sampler.next_pair()
            else:
                i, j = draw(n, counts, rng)
            noisy = outcome_rng.integers(N_LABS) < NOISY_LABS
            outcome = _judge(theta[i] - theta[j], noisy, outcome_rng)
            a.append(i)
            b.append(j)
            y.append(outcome)
            counts[i] += 1
            counts[j] += 1
            done += 1
            if sampler is not None:
                pending.append((i, j, outcome))
                if len(pending) >= batch:
                    pa, pb, py = zip(*pending, strict=True)
                    sampler.update_many(pa, pb, py)
                    pending.clear()
        table = aggregate(np.array(a), np.array(b), np.array(y), n)
        estimate = newton_fit(table, ties="half", ridge=DEFAULT_RIDGE).theta
        taus.append(kendalltau(estimate, theta).statistic)
    good = np.array(taus) >= TAU_TARGET
    first = float(checkpoints[np.argmax(good)]) if good.any() else np.inf
    bad_after = np.flatnonzero(~good)
    if not good[-1]:
        stay = np.inf
    elif bad_after.size == 0:
        stay = float(checkpoints[0])
    else:
        stay = float(checkpoints[bad_after[-1] + 1])
    return first, stay


def _task(args: tuple[Scenario, str, int]) -> tuple[Scenario, str, int, float, float]:
    scenario, strategy, seed = args
    first, stay = run(scenario, strategy, seed)
    return scenario, strategy, seed, first, stay


def _summary(values: list[float], budget: int) -> str:
    arr = np.array(values)
    q1, med, q3 = np.percentile(arr, [25, 50, 75])

    def fmt(x: float) -> str:
        return f">{budget}" if not np.isfinite(x) else f"{x:.0f}"

    return f"{fmt(med)} [{fmt(q1)}-{fmt(q3)}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small scenarios, 10 seeds (under a minute)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per scenario (default 30, quick 10)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    args = parser.parse_args()
    scenarios = QUICK if args.quick else FULL
    n_seeds = args.seeds or (10 if args.quick else 30)
    tasks = [(s, strategy, seed) for s in scenarios for strategy in STRATEGIES for seed in range(n_seeds)]
    results: dict[tuple[Scenario, str], list[tuple[float, float]]] = {}
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for scenario, strategy, _, first, stay in tqdm(
            pool.map(_task, tasks, chunksize=2), total=len(tasks), desc="tournaments"
        ):
            results.setdefault((scenario, strategy), []).append((first, stay))
    elapsed = time.perf_counter() - started
    print(
        f"\nComparisons to Kendall tau >= {TAU_TARGET}: median [IQR] over {n_seeds} seeds; Davidson ties "
        f"(nu={NU}); {NOISY_LABS} of {N_LABS} labs noisy (coin flips)"
    )
    header = f"{'n':>4} {'spread':>6} {'strategy':>10} {'first reach':>22} {'stays':>22} {'uniform/ours':>13}"
    print(header)
    print("-" * len(header))
    for scenario in scenarios:
        medians = {}
        for strategy in STRATEGIES:
            rows = results[(scenario, strategy)]
            medians[strategy] = float(np.median([r[1] for r in rows]))
        for strategy in STRATEGIES:
            rows = results[(scenario, strategy)]
            ratio = ""
            if strategy in ("ours", "blinded"):
                ratio = f"{medians['uniform'] / medians[strategy]:.2f}x"
            print(
                f"{scenario.n_items:>4} {scenario.spread:>6.1f} {strategy:>10} "
                f"{_summary([r[0] for r in rows], scenario.budget):>22} "
                f"{_summary([r[1] for r in rows], scenario.budget):>22} {ratio:>13}"
            )
    print(f"\n{len(tasks)} tournaments in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
