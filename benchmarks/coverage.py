"""Do the leaderboard's 95% intervals and rank claims hold where the arena runs? Simulations with known truth.

Each condition simulates boards: true log-strengths ``theta`` (``normal``: N(0, spread^2) draws; ``even``:
evenly spaced with standard deviation ``spread``), outcomes from Davidson's tie model (nu = 0.8: about 25%
ties among close pairs), pairs drawn by one of the designs below, then ``ranking.fit`` with the public defaults
(Davidson ties, empirical-Bayes prior, posterior intervals, order effect, Holm rank bands). Reported per
condition:

- ``items``: share of rated items whose score interval covers the true centred strength;
- ``pairs``: share of same-group pairs whose difference interval (``d +/- 1.96 sd``) covers the true difference;
- ``+/-``: 1.96 standard errors of the item coverage across boards (boards are independent; items within a
  board are not, so the binomial error uses the board means);
- ``false``: share of boards with at least one significant pair in the wrong direction (``rank_high`` of the
  truly better item below ``rank_low`` of the worse); for the ``null`` conditions (all items equal) any
  significant pair is false;
- ``order``: coverage of the true order effect by ``order_effect_ci`` (conditions with an order effect).

Designs: ``uniform`` (every pair equally likely, random slots); ``adaptive`` (:class:`ranking.PairSampler`,
refitted between batches of 50 comparisons as the server does between snapshots, random slots); ``slotted``
(uniform pairs, but the stronger half of the items takes slot A 80% of the time, with a true order effect of
0.4 nats: an uncorrected fit leaks it into the scores).

Extra rows: ``lucky`` (a board of 9 items with 400 comparisons plus a newcomer with one win: share of boards
where the newcomer is significantly above anyone).

Adaptive pairs at n = 30 (issue 14 item 1; measured 2026-12-01 with ``--boards 150``):
``adaptive n=30 m=3000 sd=1.0`` covered 0.932 +/- 0.011 (pairs 0.936), every other condition 0.944-0.957
(``small n=10, 10/policy``: 0.974, over-covering; null boards 0.995-1.000). On the same 150 boards the exact
posterior under the true prior (tau = 1 nat, nu = 0.8 and no order effect, all known; importance sampling from
a multivariate t around the Laplace mode, effective sample about 2,400 of 4,000 draws;
``python -m benchmarks.exact_posterior``) covered 0.932 +/- 0.009,
a Laplace approximation under the same known prior 0.933: the public fit is as good as the exact posterior here.
An exact posterior under the true prior covers 0.95 on average over boards whatever the adaptive design (the
sampler depends only on past outcomes), so most of the shortfall is the Monte Carlo spread of this board set:
two further independent sets gave 0.944 +/- 0.009 (150 boards; exact posterior 0.944) and 0.948 +/- 0.006 (250
boards; exact 0.950), and the benchmark's own seed with ``--boards 400`` (its first 150 boards as above) 0.945 +/-
0.006 (pairs 0.945). Pooled over these 800 independent boards the fit covers 0.946 (+/- about 0.004), the
exact posterior 0.944 over the 550 where it was run: inside 0.95 +/- 0.02. Since the fit tracks the exact
posterior to 0.002 on every set of 150-250 boards, no change of approximation, prior scale or design correction
is warranted by these runs. What was tried: the robust sandwich (``ci="sandwich"``) 0.908 +/- 0.013 (worse:
the variance of its z-scores is 1.36); the true prior scale instead of the estimated one 0.945 against 0.944
(no gain: the scale is not underestimated); inverse-propensity weights were measured worse by the audit (0.35).

Run: ``python -m benchmarks.coverage [--quick] [--boards N]``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np

import ranking
from ranking.simulate import simulate_adaptive, simulate_outcomes

NU = 0.8
Z95 = 1.959963984540054
BATCH = 50
ORDER_EFFECT = 0.4


@dataclass(frozen=True)
class Condition:
    name: str
    n_items: int
    spread: float
    n_comparisons: int
    design: str = "uniform"
    layout: str = "normal"
    order_effect: float = 0.0


def conditions(quick: bool) -> list[Condition]:
    grid = []
    for design in ("uniform", "adaptive"):
        for n, m in ((10, 1000), (30, 3000)):
            for spread in (0.5, 1.0, 2.0):
                grid.append(Condition(f"{design} n={n} m={m} sd={spread}", n, spread, m, design))
    grid += [
        Condition("even n=30 m=1000 sd=1", 30, 1.0, 1000, layout="even"),
        Condition("adaptive even n=10 m=1000 sd=2", 10, 2.0, 1000, "adaptive", layout="even"),
        Condition("small n=30, 10/policy sd=1", 30, 1.0, 150),
        Condition("small n=30, 20/policy sd=1", 30, 1.0, 300),
        Condition("small n=30, 20/policy sd=2", 30, 2.0, 300),
        Condition("small n=10, 10/policy sd=1", 10, 1.0, 50),
        Condition("adaptive small n=30, 20/policy", 30, 1.0, 300, "adaptive"),
        Condition("slotted n=10 m=1000 sd=1", 10, 1.0, 1000, "slotted", order_effect=ORDER_EFFECT),
        Condition("slotted n=30 m=3000 sd=1", 30, 1.0, 3000, "slotted", order_effect=ORDER_EFFECT),
        Condition("null n=30 m=3000", 30, 0.0, 3000),
        Condition("null adaptive n=30 m=3000", 30, 0.0, 3000, "adaptive"),
    ]
    if quick:
        keep = {
            "uniform n=10 m=1000 sd=1.0",
            "adaptive n=30 m=3000 sd=1.0",
            "adaptive n=10 m=1000 sd=2.0",
            "small n=30, 10/policy sd=1",
            "slotted n=30 m=3000 sd=1",
            "null n=30 m=3000",
        }
        grid = [c for c in grid if c.name in keep]
    return grid


def true_strengths(condition: Condition, rng: np.random.Generator) -> np.ndarray:
    n = condition.n_items
    if condition.layout == "even":
        theta = np.linspace(-1.0, 1.0, n)
        theta *= condition.spread / theta.std()
    else:
        theta = rng.normal(0.0, condition.spread, n)
    return theta - theta.mean()


def draw_board(
    condition: Condition, theta: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, outcome) of one simulated board, ``a`` = slot A."""
    n, m = condition.n_items, condition.n_comparisons
    if condition.design == "adaptive":
        return simulate_adaptive(theta, m, rng, NU, batch=BATCH)
    first = rng.integers(0, n, m)
    second = (first + rng.integers(1, n, m)) % n
    if condition.design == "slotted":
        # the stronger half takes slot A 80% of the time against the weaker half
        strong = theta >= np.median(theta)
        lead = np.where(strong[first] & ~strong[second], first, second)
        follow = np.where(lead == first, second, first)
        mixed = strong[first] != strong[second]
        keep = rng.random(m) < np.where(mixed, 0.8, 0.5)
        a, b = np.where(keep, lead, follow), np.where(keep, follow, lead)
    else:
        a, b = first, second
    y = simulate_outcomes(theta[a] - theta[b] + condition.order_effect, rng, NU)
    return a, b, y


@dataclass
class Tally:
    item_cover: list[float]
    pair_hits: int = 0
    pair_total: int = 0
    false_boards: int = 0
    order_hits: int = 0
    order_total: int = 0
    tie_share: float = 0.0


def run_condition(condition: Condition, boards: int, seed: int) -> Tally:
    rng = np.random.default_rng(seed)
    tally = Tally(item_cover=[])
    for _ in range(boards):
        theta = true_strengths(condition, rng)
        a, b, y = draw_board(condition, theta, rng)
        r = ranking.fit(a, b, y, condition.n_items)
        tally.tie_share += float(np.mean(y == 0.5)) / boards
        rated = r.n_comparisons > 0
        main = rated & (r.group == 0)
        truth = theta - theta[main].mean()
        low, high = (r.ci_low - 1000.0) / ranking.ELO_SCALE, (r.ci_high - 1000.0) / ranking.ELO_SCALE
        tally.item_cover.append(float(np.mean((low[main] <= truth[main]) & (truth[main] <= high[main]))))
        hits, total = _pair_coverage(r, theta, main)
        tally.pair_hits += hits
        tally.pair_total += total
        tally.false_boards += int(_wrong_claim(r, theta, main, null=condition.spread == 0.0))
        if condition.order_effect and math.isfinite(r.order_effect):
            lo, hi = r.order_effect_ci
            tally.order_hits += int(lo <= condition.order_effect <= hi)
            tally.order_total += 1
    return tally


def _pair_coverage(r: ranking.Ratings, theta: np.ndarray, main: np.ndarray) -> tuple[int, int]:
    """Hits and total of true differences covered by ``d +/- 1.96 sd(d)`` (``sd`` from ``r.covariance``)."""
    cov = r.covariance
    idx = np.flatnonzero(main)
    i, j = np.triu_indices(idx.size, 1)
    i, j = idx[i], idx[j]
    sd = np.sqrt(np.maximum(cov[i, i] + cov[j, j] - 2 * cov[i, j], 0.0))
    diff = (r.scores[i] - r.scores[j]) / ranking.ELO_SCALE
    hits = int(np.sum(np.abs(diff - (theta[i] - theta[j])) <= Z95 * sd))
    return hits, int(i.size)


def _wrong_claim(r: ranking.Ratings, theta: np.ndarray, main: np.ndarray, *, null: bool) -> bool:
    """Whether the board claims a significant order that is false (any claim at all on a null board)."""
    idx = np.flatnonzero(main)
    for i in idx:
        for j in idx:
            if i == j:
                continue
            # i is claimed significantly above j when i's worst rank is better than j's best rank
            claimed = r.rank_high[i] < r.rank_low[j]
            if claimed and (null or theta[i] < theta[j]):
                return True
    return False


def lucky_newcomer(boards: int, seed: int) -> float:
    """Share of boards where a newcomer with a single win is significantly above any established item."""
    rng = np.random.default_rng(seed)
    claims = 0
    for _ in range(boards):
        theta = np.append(rng.normal(0.0, 1.0, 9), 0.0)
        a = rng.integers(0, 9, 400)
        b = (a + rng.integers(1, 9, 400)) % 9
        y = simulate_outcomes(theta[a] - theta[b], rng, NU)
        loser = int(rng.integers(0, 9))
        a, b, y = np.append(a, 9), np.append(b, loser), np.append(y, 1.0)
        r = ranking.fit(a, b, y, 10)
        claims += int(np.any(r.rank_high[9] < r.rank_low[:9]))
    return claims / boards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="six conditions, fewer boards")
    parser.add_argument("--boards", type=int, default=0, help="boards per condition (default 200, quick 60)")
    args = parser.parse_args()
    boards = args.boards or (60 if args.quick else 200)
    print(f"{'condition':<34}{'ties':>6}{'items':>8}{'+/-':>7}{'pairs':>8}{'false':>8}{'order':>8}{'s':>6}")
    for k, condition in enumerate(conditions(args.quick)):
        started = time.perf_counter()
        t = run_condition(condition, boards, seed=1000 + k)
        cover = np.array(t.item_cover)
        error = Z95 * cover.std(ddof=1) / math.sqrt(cover.size)
        pairs = t.pair_hits / t.pair_total if t.pair_total else math.nan
        order = f"{t.order_hits / t.order_total:.3f}" if t.order_total else "-"
        print(
            f"{condition.name:<34}{t.tie_share:>6.2f}{cover.mean():>8.3f}{error:>7.3f}{pairs:>8.3f}"
            f"{t.false_boards / boards:>8.3f}{order:>8}{time.perf_counter() - started:>6.0f}"
        )
    print(f"lucky newcomer significantly above anyone: {lucky_newcomer(boards, seed=7):.3f} of boards")


if __name__ == "__main__":
    main()
