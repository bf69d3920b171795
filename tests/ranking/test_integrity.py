"""lab_agreement flags vote flippers and spares honest labs; cap_influence bounds lab shares."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ranking
from ranking.simulate import simulate_comparisons


def _labbed_games(seed: int, flip: dict[int, float], n_labs: int = 8, n_games: int = 4_000):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 1, 15)
    a, b, y = simulate_comparisons(theta, n_games, rng, nu=0.3)
    lab = rng.integers(0, n_labs, n_games)
    for bad, share in flip.items():
        flipped = (lab == bad) & (rng.random(n_games) < share)
        y = np.where(flipped, 1.0 - y, y)
    return a, b, y, np.array([f"lab{k}" for k in lab])


def test_flippers_flagged_honest_labs_spared() -> None:
    flagged_flippers, flagged_honest, honest_total = 0, 0, 0
    for seed in range(10):
        a, b, y, lab = _labbed_games(seed, {0: 1.0, 1: 0.5})
        stats = ranking.lab_agreement(a, b, y, lab, 15)
        flagged_flippers += stats["lab0"].flagged + stats["lab1"].flagged
        flagged_honest += sum(stats[f"lab{k}"].flagged for k in range(2, 8))
        honest_total += 6
        assert stats["lab0"].agreement < stats["lab0"].expected - 0.2
    assert flagged_flippers == 20
    assert flagged_honest / honest_total <= 0.05


def test_all_honest_rarely_flagged_and_json_safe() -> None:
    flagged = 0
    for seed in range(10):
        a, b, y, lab = _labbed_games(100 + seed, {})
        stats = ranking.lab_agreement(a, b, y, lab, 15)
        flagged += sum(s.flagged for s in stats.values())
        for s in stats.values():
            assert abs(s.agreement - s.expected) < 0.06
            json.dumps(s.to_dict(), allow_nan=False)
    assert flagged <= 2


def test_consensus_from_given_ratings() -> None:
    a, b, y, lab = _labbed_games(7, {0: 1.0})
    consensus = ranking.fit(a, b, y, 15, ties="davidson")
    stats = ranking.lab_agreement(a, b, y, lab, 15, ratings=consensus)
    assert stats["lab0"].flagged and stats["lab0"].z > 5


def test_lab_with_only_ties_is_neutral() -> None:
    a, b, y, lab = _labbed_games(8, {})
    y = np.where(lab == "lab3", 0.5, y)
    stats = ranking.lab_agreement(a, b, y, lab, 15)
    assert stats["lab3"].n_decisive == 0 and not stats["lab3"].flagged
    assert np.isnan(stats["lab3"].agreement) and stats["lab3"].to_dict()["agreement"] is None


def _shares(a, b, lab, w, n_items):
    labs = np.unique(lab)
    per_lab = np.stack(
        [
            np.bincount(a[lab == k], w[lab == k], n_items) + np.bincount(b[lab == k], w[lab == k], n_items)
            for k in labs
        ],
        axis=1,
    )
    return per_lab / per_lab.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("max_share", [0.2, 0.35, 0.5])
def test_cap_influence_bounds_every_share(max_share: float) -> None:
    rng = np.random.default_rng(9)
    n, rows = 12, 3_000
    a = rng.integers(0, n, rows)
    b = (a + rng.integers(1, n, rows)) % n
    lab = np.where(rng.random(rows) < 0.6, "big", rng.choice(["l1", "l2", "l3", "l4", "l5"], rows))
    before = _shares(a, b, lab, np.ones(rows), n)
    assert before.max() > 0.5
    w = ranking.cap_influence(a, b, lab, max_share=max_share)
    assert np.all((w > 0) & (w <= 1.0))
    assert _shares(a, b, lab, w, n).max() <= max_share + 1e-6
    assert np.all(w[lab != "big"] > 0.5)  # small labs are hardly touched


def test_cap_influence_equalises_when_too_few_labs() -> None:
    a = np.array([0, 0, 0, 0, 1])
    b = np.array([1, 1, 1, 2, 2])
    lab = np.array(["x", "x", "x", "y", "y"])
    w = ranking.cap_influence(a, b, lab, max_share=0.3, weights=[2.0, 1.0, 1.0, 1.0, 1.0])
    shares = _shares(a, b, lab, w, 3)
    np.testing.assert_allclose(shares[0], [0.5, 0.5])  # two labs on item 0: equal shares, not 0.3
    assert w.sum() < 6.0


def test_cap_influence_no_op_when_within_cap() -> None:
    a, b, lab = np.array([0, 1]), np.array([1, 0]), np.array(["x", "y"])
    np.testing.assert_array_equal(ranking.cap_influence(a, b, lab, max_share=0.5), [1.0, 1.0])
    assert ranking.cap_influence([], [], [], max_share=0.5).size == 0
