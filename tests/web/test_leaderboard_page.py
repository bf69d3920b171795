"""The public leaderboard page: table, provisional section, totals, empty state, charts, methodology."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from arena.models import RankingSnapshot


def page(path: str = "/leaderboard/") -> str:
    response = Client().get(path)
    assert response.status_code == 200
    return response.content.decode()


def table(html: str, table_id: str) -> str:
    match = re.search(rf'<table class="ratings" id="{table_id}">(.*?)</table>', html, re.S)
    assert match, f"no table #{table_id}"
    return match.group(1)


def test_root_redirects_to_the_leaderboard(db):
    response = Client().get("/")
    assert response.status_code == 302 and response["Location"] == "/leaderboard/"


@pytest.mark.django_db
def test_empty_state_before_the_first_snapshot():
    html = page()
    assert 'id="empty-state"' in html
    assert "<table" not in html


def test_methodology_states_the_model_and_the_settings(settings, db):
    settings.ARENA_LAB_MAX_SHARE = 0.4
    settings.ARENA_PROVISIONAL_MIN_COMPARISONS = 12
    html = page("/methodology/")
    for fact in (
        "Bradley-Terry",
        "Ties follow Davidson's model",
        "Order effect.",
        "1000 + 400 · log<sub>10</sub>(odds)",
        "The scale is anchored",
        "hierarchical model",
        "one lucky win never makes a policy significantly best",
        "95% rank band",
        "Holm",
        "at 5%",
        "Separate groups.",
        "unrated and not ranked",
        "<strong>40%</strong>",
        "<strong>12</strong>",
        "invalid",
        "excluded",
    ):
        assert fact in html, fact


def _row(slug: str, *, score: float, low: int, high: int, group: int) -> dict:
    return {
        "slug": slug,
        "name": slug.title(),
        "organization": "Acme Robotics",
        "license": "MIT",
        "open_weights": True,
        "status": "active",
        "score": score,
        "ci_low": score - 80,
        "ci_high": score + 80,
        "rank": low,
        "rank_low": low,
        "rank_high": high,
        "group": group,
        "provisional": False,
        "n_comparisons": 40,
        "win_rate": 0.5,
        "n_labs": 2,
        "mean_progress": None,
        "last_evaluated": None,
    }


@pytest.mark.django_db
def test_rank_bands_show_as_ranges_and_separate_groups_apart():
    rows = [
        _row("alpha", score=1200, low=1, high=1, group=0),
        _row("beta", score=1000, low=2, high=3, group=0),
        _row("gamma", score=800, low=2, high=3, group=0),
        _row("delta", score=1050, low=1, high=2, group=1),
        _row("omega", score=950, low=1, high=2, group=1),
    ]
    RankingSnapshot.objects.create(
        version=1,
        method="test",
        data_hash="0" * 64,
        n_comparisons=100,
        n_policies=5,
        fit_seconds=0.1,
        ratings=rows,
        matrices={"slugs": [], "wins": [], "counts": []},
        model={"order_effect": None, "order_effect_ci": None},
    )
    html = page()
    main = table(html, "ranked")
    assert re.findall(r'<tr data-slug="([a-z]+)"', main) == ["alpha", "beta", "gamma"]
    assert re.findall(r'<td class="rank"[^>]*>([^<]+)</td>', main) == ["1", "2\u20133", "2\u20133"]
    separate = table(html, "group-1")
    assert re.findall(r'<tr data-slug="([a-z]+)"', separate) == ["delta", "omega"]
    assert 'id="separate-group-1"' in html and "never compared" in html
    assert 'id="order-effect"' not in html  # one slot order only: nothing estimated, nothing claimed


class TestTheLeaguesLeaderboard:
    """The leaderboard page of the league. The league is built once for the class (see tests/web/conftest.py)."""

    def test_ranked_and_provisional_rows_follow_the_snapshot(self, league):
        snapshot = RankingSnapshot.objects.order_by("-version").first()
        html = page()
        ranked = [r for r in snapshot.ratings if not r["provisional"]]
        provisional = [r for r in snapshot.ratings if r["provisional"]]
        assert ranked and provisional, "the league should have both kinds of rows"
        for table_id, rows in (("ranked", ranked), ("provisional", provisional)):
            body = table(html, table_id)
            assert re.findall(r'<tr data-slug="([a-z0-9-]+)"', body) == [r["slug"] for r in rows]
            cells = re.findall(
                r'<td class="rank" data-rank-low="(\d+)" data-rank-high="(\d+)">([^<]+)</td>.*?'
                r'<td class="num score">(\d+)</td>\s*<td class="num ci">\+(\d+)/-(\d+)</td>',
                body,
                re.S,
            )
            assert [(int(low), int(high), int(score)) for low, high, _, score, _, _ in cells] == [
                (r["rank_low"], r["rank_high"], round(r["score"])) for r in rows
            ]
            assert [
                shown == (low if low == high else f"{low}\u2013{high}") for low, high, shown, *_ in cells
            ] == [True] * len(rows)
            assert [(int(p), int(m)) for *_, p, m in cells] == [
                (round(r["ci_high"] - r["score"]), round(r["score"] - r["ci_low"])) for r in rows
            ]
        assert 'id="provisional-section"' in html

    def test_header_gives_version_update_time_and_totals(self, league):
        snapshot = RankingSnapshot.objects.order_by("-version").first()
        html = page()
        assert f'id="snapshot-version">{snapshot.version}<' in html
        assert snapshot.n_comparisons == league.sessions
        assert f'id="total-comparisons">{league.sessions}<' in html
        assert f'id="total-policies">{snapshot.n_policies}<' in html
        assert 'id="total-labs">2<' in html
        assert snapshot.created_at.strftime("%Y-%m-%d %H:%M") in html

    def test_charts_have_one_mark_per_policy_and_pair(self, league):
        snapshot = RankingSnapshot.objects.order_by("-version").first()
        html = page()
        n = snapshot.n_policies
        ci_plot = re.search(r'<svg[^>]*id="ci-plot".*?</svg>', html, re.S).group(0)
        assert ci_plot.count('class="ci-point"') == n
        assert "<title" in ci_plot and "<desc" in ci_plot
        counts = snapshot.matrices["counts"]
        never_met = sum(1 for i in range(n) for j in range(n) if i != j and counts[i][j] == 0)
        for ident in ("heatmap-win-fraction", "heatmap-counts"):
            svg = re.search(rf'<svg[^>]*id="{ident}".*?</svg>', html, re.S).group(0)
            assert len(re.findall(r'<rect class="cell[" ]', svg)) == n * (n - 1)
            assert svg.count('class="cell cell-empty"') == never_met

    def test_policy_names_link_to_their_pages(self, league):
        html = page()
        for slug in league.slugs:
            assert f'href="/policies/{slug}/"' in html

    def test_order_effect_of_the_snapshot_is_reported(self, league):
        # the league's sessions put policies in random slots, so both orders occur and the effect is estimated
        snapshot = RankingSnapshot.objects.order_by("-version").first()
        model = snapshot.model
        assert model["order_effect"] is not None and "order=fitted" in model["fit"]
        low, high = model["order_effect_ci"]
        assert low < model["order_effect"] < high
        shown = re.search(r'id="order-effect">(.*?)</p>', page(), re.S).group(1)
        assert (
            f"{model['order_effect']:.3f} nats" in shown and f"{low:.3f}" in shown and f"{high:.3f}" in shown
        )
        assert f"{model['order_effect']:.3f} nats" in page("/methodology/")
