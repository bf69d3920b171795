"""The SVG helpers on their own: accessible markup, escaping, colours and axis ticks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

from arena.selectors.pages import HistoryPoint
from arena.web import charts

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ElementTree.Element:
    return ElementTree.fromstring(markup)


def test_ci_plot_is_well_formed_accessible_and_sorted():
    svg = parse(
        charts.ci_plot(
            [
                charts.Interval(label="low-one", score=900, low=850, high=950),
                charts.Interval(
                    label="high-one", score=1100, low=1000, high=1200, href="/policies/high-one/"
                ),
            ],
            ident="plot",
            title="Scores",
        )
    )
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "plot-title plot-desc"
    assert svg.find(f"{SVG}title").text == "Scores"
    assert "high-one 1100 (1000 to 1200)" in svg.find(f"{SVG}desc").text
    points = svg.findall(f".//{SVG}circle")
    assert [float(p.get("cy")) for p in points] == sorted(float(p.get("cy")) for p in points)
    assert "high-one" in points[0].find(f"{SVG}title").text
    assert float(points[0].get("cx")) > float(points[1].get("cx"))


def test_labels_are_escaped():
    markup = charts.heatmap(
        labels=["<script>", "b&c"],
        values=[[None, 0.75], [0.25, None]],
        ident="h",
        title="<t>",
        desc="d",
        kind="fraction",
        cell_text=[["", "75"], ["25", ""]],
        cell_titles=[["", "x"], ["y", ""]],
    )
    assert "<script>" not in markup and "&lt;script&gt;" in markup and "b&amp;c" in markup
    svg = parse(markup)
    assert len(svg.findall(f".//{SVG}rect")) == 2


def test_heatmap_greys_pairs_that_never_met():
    svg = parse(
        charts.heatmap(
            labels=["a", "b", "c"],
            values=[[None, 0.5, None], [0.5, None, 1.0], [None, 0.0, None]],
            ident="h",
            title="t",
            desc="d",
            kind="fraction",
            cell_text=[[""] * 3] * 3,
            cell_titles=[[""] * 3] * 3,
        )
    )
    rects = svg.findall(f".//{SVG}rect")
    assert len(rects) == 6
    assert sum(r.get("class") == "cell cell-empty" for r in rects) == 2
    assert {r.get("fill") for r in rects if r.get("class") == "cell cell-empty"} == {charts.GREY}


def test_colour_scales_have_the_right_ends():
    assert charts.diverging_colour(0.0) == "#ca0020"
    assert charts.diverging_colour(0.5) == "#f7f7f7"
    assert charts.diverging_colour(1.0) == "#0571b0"
    assert charts.sequential_colour(0.0, 10) == "#f7f7f7" and charts.sequential_colour(10, 10) == "#0571b0"


def test_nice_ticks_cover_the_range_with_round_steps():
    assert charts.nice_ticks(812, 1288) == [900, 1000, 1100, 1200]
    assert charts.nice_ticks(0, 1, count=5) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert charts.nice_ticks(float("-inf"), 3) == []


def test_score_history_draws_a_point_per_snapshot_and_a_band():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    points = [
        HistoryPoint(at=t0 + timedelta(hours=k), version=k + 1, score=1000 + 10 * k, low=950, high=1100)
        for k in range(5)
    ]
    markup = charts.score_history(points, ident="hist", title="History")
    assert markup.count('class="history-point"') == 5 and 'class="history-band"' in markup
    assert re.search(r"v1 · 2026-01-01 00:00", markup) and "v5 · 2026-01-01 04:00" in markup
    parse(markup)
