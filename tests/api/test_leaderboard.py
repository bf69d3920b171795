"""The ranking refit after preferences, the immutable snapshots and the public leaderboard."""

import pytest

from arena.models import RankingSnapshot
from arena.tasks import ranking_refit
from tests.api.actors import open_session, report_both


def play(lab, choose) -> dict:
    """Run one session; ``choose(reveal-less session) -> choice`` decides with knowledge of the stored pair."""
    from arena.models import EvaluationSession

    session = open_session(lab)
    report_both(lab, session["id"])
    stored = EvaluationSession.objects.get(pk=session["id"])
    choice = choose(stored.policy_a.slug, stored.policy_b.slug)
    return lab.post(f"/api/v1/sessions/{session['id']}/preference/", {"choice": choice, "reason": "r"}).json()


def best_wins(order):
    def choose(a: str, b: str) -> str:
        return "A" if order.index(a) < order.index(b) else "B"

    return choose


def test_preference_triggers_a_refit_with_the_new_data(
    lab1, robot1, pool, django_capture_on_commit_callbacks
):
    order = ["pi0-fast-droid", "diffusion-droid", "octo-droid"]
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            play(lab1, best_wins(order))
    snapshots = list(RankingSnapshot.objects.order_by("version"))
    assert [s.version for s in snapshots] == [1, 2, 3]
    assert [s.n_comparisons for s in snapshots] == [1, 2, 3]
    assert len({s.data_hash for s in snapshots}) == 3


def test_leaderboard_orders_policies_by_strength(settings, lab1, lab2, robot1, pool, anonymous):
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 100
    settings.ARENA_PROVISIONAL_MIN_COMPARISONS = 5
    order = ["pi0-fast-droid", "diffusion-droid", "octo-droid"]
    for _ in range(24):
        play(lab1, best_wins(order))
    ranking_refit()
    board = anonymous.get("/api/v1/leaderboard/").json()
    assert board["snapshot"] == RankingSnapshot.objects.get().version
    assert board["n_comparisons"] == 24
    rows = board["rows"]
    assert [r["slug"] for r in rows] == order
    top = rows[0]
    assert top["ci_low"] <= top["score"] <= top["ci_high"]
    # one policy is the scale anchor, fixed at 1000 with a zero-width interval; the others have real intervals
    (anchor,) = [r for r in rows if r["anchor"]]
    assert anchor["score"] == anchor["ci_low"] == anchor["ci_high"] == 1000.0
    assert all(r["ci_low"] < r["score"] < r["ci_high"] for r in rows if not r["anchor"])
    assert top["win_rate"] == 1.0 and top["n_labs"] == 1 and top["mean_progress"] is not None
    assert all("endpoint" not in key for key in top)


def test_excluded_labs_do_not_count(lab1, robot1, pool):
    from arena.models import Lab

    play(lab1, lambda a, b: "A")
    Lab.objects.filter(name="Berkeley Lab").update(votes_excluded=True)
    ranking_refit()
    assert RankingSnapshot.objects.order_by("-version").first().n_comparisons == 0


def test_invalid_sessions_do_not_count(lab1, robot1, pool):
    session = open_session(lab1)
    report_both(lab1, session["id"])
    lab1.post(f"/api/v1/sessions/{session['id']}/preference/", {"choice": "A", "reason": "r", "valid": False})
    ranking_refit()
    assert RankingSnapshot.objects.get().n_comparisons == 0


@pytest.mark.django_db
def test_empty_leaderboard(anonymous):
    board = anonymous.get("/api/v1/leaderboard/").json()
    assert board["snapshot"] is None and board["rows"] == []


def test_snapshot_equals_a_direct_fit_of_the_stored_preferences(settings, lab1, robot1, pool):
    """Aggregating in SQL (tallies with counts) must give the same ratings as fitting one row per preference."""
    import numpy as np

    import ranking
    from arena.models import Policy, Preference

    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 100
    order = ["pi0-fast-droid", "diffusion-droid", "octo-droid"]
    for k in range(18):
        play(lab1, best_wins(order) if k % 3 else (lambda a, b: "tie"))
    ranking_refit()
    slugs = sorted(order)
    rows = list(Preference.objects.values_list("policy_a__slug", "policy_b__slug", "choice"))
    oldest = Policy.objects.filter(slug__in=order).order_by("pk").first().slug
    direct = ranking.fit(
        np.array([slugs.index(a) for a, _, _ in rows]),
        np.array([slugs.index(b) for _, b, _ in rows]),
        np.array([{"A": 1.0, "B": 0.0, "tie": 0.5}[c] for _, _, c in rows]),
        len(slugs),
        anchor=slugs.index(oldest),  # the service pins the oldest policy's score
    )
    stored = {r["slug"]: r for r in RankingSnapshot.objects.get().ratings}
    for k, slug in enumerate(slugs):
        assert stored[slug]["score"] == pytest.approx(direct.scores[k], abs=1e-6)
        assert stored[slug]["ci_high"] == pytest.approx(direct.ci_high[k], abs=1e-6)


def test_counts_and_win_rates_are_raw_even_when_a_lab_is_capped(settings, lab1, lab2, pool):
    """The lab share cap lowers weights in the fit; the table's comparisons and win rates stay raw counts."""
    from tests.api.actors import register_robot

    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 100
    settings.ARENA_LAB_MAX_SHARE = 0.5
    register_robot(lab1)
    register_robot(lab2)
    order = ["pi0-fast-droid", "diffusion-droid", "octo-droid"]
    for k in range(10):
        play(lab1 if k < 8 else lab2, best_wins(order))  # lab1 dominates: its weight is capped
    ranking_refit()
    rows = {r["slug"]: r for r in RankingSnapshot.objects.get().ratings}
    from arena.models import Preference

    for slug in order:
        games = (
            Preference.objects.filter(policy_a__slug=slug).count()
            + Preference.objects.filter(policy_b__slug=slug).count()
        )
        assert rows[slug]["n_comparisons"] == games
    assert rows["pi0-fast-droid"]["win_rate"] == 1.0 and rows["octo-droid"]["win_rate"] == 0.0
