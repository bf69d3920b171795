"""Small SVG charts drawn on the server: confidence-interval plots, heatmaps, a score history, inline CI bars.

Every chart is one ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` (what a screen reader announces)
and a ``viewBox``, so it scales to its container; pages put charts in a horizontally scrolling box with a
minimum width so their text stays readable on a phone. Coordinates are in viewBox units (about one CSS pixel
at the natural width). Text is escaped here; the functions return markup safe to insert in a template.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

GREY = "#d9d9d9"
FONT = 12
LABEL_WIDTH = 150
ROW_HEIGHT = 22


@dataclass(frozen=True)
class Interval:
    """One estimate with its 95% interval, on the Elo-like scale."""

    label: str
    score: float
    low: float
    high: float
    href: str | None = None


@dataclass(frozen=True)
class Pair:
    """One item's value on two scales (x, y), e.g. its real-robot and replica scores."""

    label: str
    x: float
    y: float
    href: str | None = None


class ScorePoint(Protocol):
    """A policy's score in one ranking snapshot (e.g. ``arena.selectors.pages.HistoryPoint``)."""

    @property
    def at(self) -> datetime: ...
    @property
    def version(self) -> int: ...
    @property
    def score(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def high(self) -> float: ...


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _finite(x: float) -> bool:
    return math.isfinite(x)


def nice_ticks(lo: float, hi: float, *, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, about ``count`` ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _svg(
    *,
    ident: str,
    width: float,
    height: float,
    title: str,
    desc: str,
    body: list[str],
    css_class: str,
    min_width: float,
) -> SafeString:
    """Wrap ``body``: drawn at most at its natural size, and never narrower than ``min_width`` CSS pixels (the
    page's scrolling box takes the rest), so its 12-unit text stays at least ~10 px tall."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" id="{escape(ident)}" role="img" '
        f'viewBox="0 0 {_num(width)} {_num(height)}" width="{_num(width)}" height="{_num(height)}" '
        f'style="max-width: {_num(width)}px; min-width: {_num(min(width, min_width))}px" '
        f'preserveAspectRatio="xMinYMin meet" aria-labelledby="{escape(ident)}-title {escape(ident)}-desc" '
        f'font-size="{FONT}" font-family="system-ui, sans-serif">'
        f'<title id="{escape(ident)}-title">{escape(title)}</title>'
        f'<desc id="{escape(ident)}-desc">{escape(desc)}</desc>'
    )
    return mark_safe(head + "".join(body) + "</svg>")


def _text(
    x: float, y: float, text: str, *, anchor: str = "start", css: str = "", size: int | None = None
) -> str:
    extra = f' class="{css}"' if css else ""
    font = f' font-size="{size}"' if size else ""
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" dominant-baseline="middle"{extra}{font}>'
        f"{escape(text)}</text>"
    )


def ci_bar(
    *, score: float, low: float, high: float, lo: float, hi: float, width: int = 110, height: int = 14
) -> SafeString:
    """An inline bar for a table cell: the interval [low, high] and the score, on a shared axis [lo, hi]."""
    span = (hi - lo) or 1.0

    def x(v: float) -> float:
        return 2 + (width - 4) * (min(max(v, lo), hi) - lo) / span

    mid = height / 2
    return mark_safe(
        f'<svg class="ci-bar" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="95% interval {low:.0f} to {high:.0f}">'
        f'<line x1="{_num(x(low))}" y1="{_num(mid)}" x2="{_num(x(high))}" y2="{_num(mid)}" '
        f'stroke="#4a6fa5" stroke-width="4" stroke-linecap="round" opacity="0.45"/>'
        f'<circle cx="{_num(x(score))}" cy="{_num(mid)}" r="3.5" fill="#1f3b63"/></svg>'
    )


def ci_plot(intervals: Sequence[Interval], *, ident: str, title: str) -> SafeString:
    """Point and whisker per estimate, highest score first: one ``circle.ci-point`` per interval."""
    items = sorted(intervals, key=lambda i: -i.score)
    plot_width = 560
    # Room for the longest name at ~6.5 px per character of the 11 px label font.
    label_width = max(LABEL_WIDTH, 16 + round(6.5 * max((len(i.label) for i in items), default=0)))
    width = label_width + plot_width + 20
    top, bottom = 34, 34
    height = top + bottom + 8 + ROW_HEIGHT * max(len(items), 1)
    values = [v for i in items for v in (i.score, i.low, i.high) if _finite(v)]
    lo, hi = (min(values), max(values)) if values else (900.0, 1100.0)
    pad = (hi - lo) * 0.05 or 10.0
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return label_width + plot_width * (v - lo) / (hi - lo)

    body = [_text(width / 2, 14, title, anchor="middle", css="chart-title")]
    axis_y = top + ROW_HEIGHT * len(items) + 6
    for tick in nice_ticks(lo, hi):
        body.append(
            f'<line x1="{_num(x(tick))}" y1="{top}" x2="{_num(x(tick))}" y2="{_num(axis_y)}" stroke="#eee"/>'
        )
        body.append(_text(x(tick), axis_y + 12, f"{tick:.0f}", anchor="middle", css="tick"))
    body.append(_text(label_width + plot_width / 2, axis_y + 32, "score (95% CI)", anchor="middle"))
    for k, item in enumerate(items):
        y = top + ROW_HEIGHT * k + ROW_HEIGHT / 2
        name = _text(label_width - 8, y, item.label, anchor="end")
        body.append(f'<a href="{escape(item.href)}">{name}</a>' if item.href else name)
        if _finite(item.low) and _finite(item.high):
            body.append(
                f'<line class="ci-whisker" x1="{_num(x(item.low))}" y1="{_num(y)}" x2="{_num(x(item.high))}" '
                f'y2="{_num(y)}" stroke="#4a6fa5" stroke-width="2"/>'
            )
            for end in (item.low, item.high):
                body.append(
                    f'<line x1="{_num(x(end))}" y1="{_num(y - 5)}" x2="{_num(x(end))}" y2="{_num(y + 5)}" '
                    f'stroke="#4a6fa5" stroke-width="2"/>'
                )
        tooltip = f"{item.label}: {item.score:.0f}"
        if _finite(item.low) and _finite(item.high):
            tooltip += f" (95% CI {item.low:.0f} to {item.high:.0f})"
        body.append(
            f'<circle class="ci-point" cx="{_num(x(item.score))}" cy="{_num(y)}" r="4.5" fill="#1f3b63">'
            f"<title>{escape(tooltip)}</title></circle>"
        )
    desc = "; ".join(
        f"{i.label} {i.score:.0f}"
        + (f" ({i.low:.0f} to {i.high:.0f})" if _finite(i.low) and _finite(i.high) else "")
        for i in items
    )
    return _svg(
        ident=ident,
        width=width,
        height=height,
        title=title,
        desc=desc or "No estimates yet.",
        body=body,
        css_class="chart ci-plot",
        min_width=0.85 * width,
    )


def _mix(c0: tuple[int, int, int], c1: tuple[int, int, int], t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    r, g, b = (round(a + (z - a) * t) for a, z in zip(c0, c1, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


RED, WHITE, BLUE = (202, 0, 32), (247, 247, 247), (5, 113, 176)


def diverging_colour(value: float) -> str:
    """Red (0) through near-white (0.5) to blue (1), for win fractions."""
    return _mix(RED, WHITE, value / 0.5) if value < 0.5 else _mix(WHITE, BLUE, (value - 0.5) / 0.5)


def sequential_colour(value: float, vmax: float) -> str:
    """Near-white (0) to blue (vmax), on a square-root scale so small counts stay visible."""
    return _mix(WHITE, BLUE, math.sqrt(value / vmax) if vmax > 0 else 0.0)


def heatmap(
    *,
    labels: Sequence[str],
    values: Sequence[Sequence[float | None]],
    ident: str,
    title: str,
    desc: str,
    kind: str,
    cell_text: Sequence[Sequence[str]],
    cell_titles: Sequence[Sequence[str]],
) -> SafeString:
    """An n x n grid, one ``rect.cell`` per (row, column) pair off the diagonal; grey (``cell-empty``) where a
    value is None. ``kind``: "fraction" (values in [0, 1], diverging colours) or "count" (sequential
    colours)."""
    n = len(labels)
    cell = 38
    top = LABEL_WIDTH + 24
    width = LABEL_WIDTH + cell * n + 70  # room for the last column's slanted label
    height = top + cell * n + 30
    finite = [v for row in values for v in row if v is not None]
    vmax = max(finite) if finite else 0.0
    body = [
        _text(width / 2, 14, title, anchor="middle", css="chart-title"),
        _text(LABEL_WIDTH + cell * n / 2, top + cell * n + 18, "column policy", anchor="middle", css="tick"),
        _text(8, top - 10, "row policy", css="tick"),
    ]
    for j, label in enumerate(labels):
        cx = LABEL_WIDTH + cell * j + cell / 2
        body.append(
            f'<text x="{_num(cx)}" y="{top - 6}" transform="rotate(-60 {_num(cx)} {top - 6})" '
            f'text-anchor="start" dominant-baseline="middle">{escape(label)}</text>'
        )
    for i, label in enumerate(labels):
        cy = top + cell * i + cell / 2
        body.append(_text(LABEL_WIDTH - 6, cy, label, anchor="end"))
        for j in range(n):
            if i == j:
                continue
            value = values[i][j]
            x, y = LABEL_WIDTH + cell * j, top + cell * i
            if value is None:
                fill, css = GREY, "cell cell-empty"
            else:
                fill = diverging_colour(value) if kind == "fraction" else sequential_colour(value, vmax)
                css = "cell"
            body.append(
                f'<rect class="{css}" x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{fill}">'
                f"<title>{escape(cell_titles[i][j])}</title></rect>"
            )
            text = cell_text[i][j]
            if text:
                dark = value is not None and (
                    abs(value - 0.5) > 0.3 if kind == "fraction" else vmax > 0 and value / vmax > 0.5
                )
                body.append(
                    _text(
                        x + (cell - 1) / 2,
                        y + (cell - 1) / 2,
                        text,
                        anchor="middle",
                        size=10,
                        css="cell-label light" if dark else "cell-label",
                    )
                )
    return _svg(
        ident=ident,
        width=width,
        height=height,
        title=title,
        desc=desc,
        body=body,
        css_class=f"chart heatmap heatmap-{kind}",
        min_width=0.8 * width,
    )


def agreement_plot(
    pairs: Sequence[Pair], *, ident: str, title: str, x_label: str, y_label: str
) -> SafeString:
    """A scatter plot, one ``circle.agreement-point`` per pair, with both axes ticked and labelled."""
    plot, left, top, bottom = 360, 64, 30, 48
    width, height = left + plot + 24, top + plot + bottom
    xs = [p.x for p in pairs if _finite(p.x)] or [900.0, 1100.0]
    ys = [p.y for p in pairs if _finite(p.y)] or [900.0, 1100.0]

    def scale(values: list[float]) -> tuple[float, float]:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or 10.0
        return lo - pad, hi + pad

    (x0, x1), (y0, y1) = scale(xs), scale(ys)

    def px(v: float) -> float:
        return left + plot * (v - x0) / (x1 - x0)

    def py(v: float) -> float:
        return top + plot * (y1 - v) / (y1 - y0)

    body = [_text(width / 2, 14, title, anchor="middle", css="chart-title")]
    body.append(f'<rect x="{left}" y="{top}" width="{plot}" height="{plot}" fill="none" stroke="#ccd"/>')
    for tick in nice_ticks(x0, x1, count=4):
        body.append(
            f'<line x1="{_num(px(tick))}" y1="{top}" x2="{_num(px(tick))}" y2="{top + plot}" stroke="#eee"/>'
        )
        body.append(_text(px(tick), top + plot + 12, f"{tick:.0f}", anchor="middle", css="tick"))
    for tick in nice_ticks(y0, y1, count=4):
        body.append(
            f'<line x1="{left}" y1="{_num(py(tick))}" x2="{left + plot}" y2="{_num(py(tick))}" stroke="#eee"/>'
        )
        body.append(_text(left - 6, py(tick), f"{tick:.0f}", anchor="end", css="tick"))
    body.append(_text(left + plot / 2, top + plot + 34, x_label, anchor="middle"))
    body.append(
        f'<text x="14" y="{_num(top + plot / 2)}" transform="rotate(-90 14 {_num(top + plot / 2)})" '
        f'text-anchor="middle" dominant-baseline="middle">{escape(y_label)}</text>'
    )
    for p in pairs:
        if not (_finite(p.x) and _finite(p.y)):
            continue
        dot = (
            f'<circle class="agreement-point" cx="{_num(px(p.x))}" cy="{_num(py(p.y))}" r="5" fill="#1f3b63">'
            f"<title>{escape(f'{p.label}: {x_label} {p.x:.0f}, {y_label} {p.y:.0f}')}</title></circle>"
        )
        near_right = px(p.x) > left + plot - 90
        name = _text(
            px(p.x) + (-8 if near_right else 8),
            py(p.y) - 8,
            p.label,
            anchor="end" if near_right else "start",
            size=11,
        )
        body.append(f'<a href="{escape(p.href)}">{dot}{name}</a>' if p.href else dot + name)
    desc = "; ".join(f"{p.label}: {p.x:.0f} and {p.y:.0f}" for p in pairs) or "No policies."
    return _svg(
        ident=ident,
        width=width,
        height=height,
        title=title,
        desc=desc,
        body=body,
        css_class="chart agreement-plot",
        min_width=0.8 * width,
    )


def score_history(points: Sequence[ScorePoint], *, ident: str, title: str) -> SafeString:
    """The score across snapshots as a line with its 95% band; one ``circle.history-point`` per snapshot."""
    plot_width, plot_height = 420, 180
    left, top, bottom = 50, 12, 40
    width, height = left + plot_width + 16, top + plot_height + bottom
    values = [v for p in points for v in (p.low, p.high, p.score) if math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (900.0, 1100.0)
    pad = (hi - lo) * 0.08 or 10.0
    lo, hi = lo - pad, hi + pad
    n = len(points)
    t0 = points[0].at.timestamp() if points else 0.0
    t1 = points[-1].at.timestamp() if points else 1.0
    span = (t1 - t0) or 1.0

    def x(p: ScorePoint) -> float:
        return left + (plot_width * (p.at.timestamp() - t0) / span if n > 1 else plot_width / 2)

    def y(v: float) -> float:
        return top + plot_height * (hi - v) / (hi - lo)

    body = []
    for tick in nice_ticks(lo, hi, count=4):
        body.append(
            f'<line x1="{left}" y1="{_num(y(tick))}" x2="{left + plot_width}" y2="{_num(y(tick))}" '
            f'stroke="#eee"/>'
        )
        body.append(_text(left - 6, y(tick), f"{tick:.0f}", anchor="end", css="tick"))
    if n:
        band = [f"{_num(x(p))},{_num(y(p.high))}" for p in points]
        band += [f"{_num(x(p))},{_num(y(p.low))}" for p in reversed(points)]
        if n > 1:
            body.append(
                f'<polygon class="history-band" points="{" ".join(band)}" fill="#4a6fa5" opacity="0.2"/>'
            )
            line = " ".join(f"{_num(x(p))},{_num(y(p.score))}" for p in points)
            body.append(f'<polyline points="{line}" fill="none" stroke="#1f3b63" stroke-width="2"/>')
        for p in points:
            if n == 1:
                body.append(
                    f'<line x1="{_num(x(p))}" y1="{_num(y(p.low))}" x2="{_num(x(p))}" '
                    f'y2="{_num(y(p.high))}" stroke="#4a6fa5" stroke-width="2"/>'
                )
            body.append(
                f'<circle class="history-point" cx="{_num(x(p))}" cy="{_num(y(p.score))}" r="3" '
                f'fill="#1f3b63">'
                f"<title>snapshot {p.version}, {p.at:%Y-%m-%d %H:%M}: {p.score:.0f} ({p.low:.0f} to "
                f"{p.high:.0f})</title></circle>"
            )
        axis_y = top + plot_height + 14
        first, last = points[0], points[-1]
        body.append(_text(left, axis_y, f"v{first.version} · {first.at:%Y-%m-%d %H:%M}", css="tick"))
        if n > 1:
            label = f"v{last.version} · {last.at:%Y-%m-%d %H:%M}"
            body.append(_text(left + plot_width, axis_y, label, anchor="end", css="tick"))
        body.append(_text(left + plot_width / 2, axis_y + 18, "ranking snapshot (time)", anchor="middle"))
    desc = (
        f"{n} snapshots; score went from {points[0].score:.0f} to {points[-1].score:.0f}; latest 95% CI "
        f"{points[-1].low:.0f} to {points[-1].high:.0f}."
        if n
        else "No snapshot rates this policy yet."
    )
    return _svg(
        ident=ident,
        width=width,
        height=height,
        title=title,
        desc=desc,
        body=body,
        css_class="chart score-history",
        min_width=0.85 * width,
    )


@dataclass(frozen=True)
class TrajectoryTrace:
    """One episode's traces for :func:`trajectory_plot`: ``t`` (n,) s, ``joints`` (n, 7) rad, ``gripper``
    (n,) in [0, 1] (0 open), ``label`` e.g. ``"A: acme-pi0"``."""

    label: str
    t: Sequence[float]
    joints: Sequence[Sequence[float]]
    gripper: Sequence[float]


TRACE_COLOURS = ("#1f3b63", "#c0612b")
MAX_TRACE_POINTS = 300


def _thin(n: int) -> range:
    return range(0, n, max(1, math.ceil(n / MAX_TRACE_POINTS)))


def trajectory_plot(traces: Sequence[TrajectoryTrace], *, ident: str, title: str) -> SafeString:
    """Joint positions (top) and gripper (bottom) of each episode over time, one colour per episode; at most
    300 points per line. One ``polyline.joint-trace`` per joint and episode, one ``polyline.gripper-trace`` per
    episode."""
    plot_width, joint_height, gripper_height, gap = 460, 150, 70, 34
    left, top, bottom = 50, 26, 40
    width = left + plot_width + 16
    height = top + joint_height + gap + gripper_height + bottom
    t_max = max((max(tr.t) for tr in traces if len(tr.t)), default=1.0) or 1.0
    joint_values = [v for tr in traces for row in tr.joints for v in row if math.isfinite(v)]
    j_lo, j_hi = (min(joint_values), max(joint_values)) if joint_values else (-1.0, 1.0)
    if j_hi - j_lo < 1e-6:
        j_lo, j_hi = j_lo - 0.5, j_hi + 0.5
    g_top = top + joint_height + gap

    def x(t: float) -> float:
        return left + plot_width * t / t_max

    def yj(v: float) -> float:
        return top + joint_height * (j_hi - v) / (j_hi - j_lo)

    def yg(v: float) -> float:
        return g_top + gripper_height * (1.0 - min(max(v, 0.0), 1.0))

    body = []
    for tick in nice_ticks(j_lo, j_hi, count=4):
        if j_lo <= tick <= j_hi:
            body.append(
                f'<line x1="{left}" y1="{_num(yj(tick))}" x2="{left + plot_width}" y2="{_num(yj(tick))}" '
                f'stroke="#eee"/>'
            )
            body.append(_text(left - 6, yj(tick), f"{tick:g}", anchor="end", css="tick"))
    for v in (0.0, 1.0):
        body.append(
            f'<line x1="{left}" y1="{_num(yg(v))}" x2="{left + plot_width}" y2="{_num(yg(v))}" stroke="#eee"/>'
        )
        body.append(_text(left - 6, yg(v), f"{v:g}", anchor="end", css="tick"))
    body.append(_text(left, top - 10, "joint positions (rad)"))
    body.append(_text(left, g_top - 10, "gripper (0 open, 1 closed)"))
    for k, tr in enumerate(traces):
        colour = TRACE_COLOURS[k % len(TRACE_COLOURS)]
        keep = _thin(len(tr.t))
        for j in range(len(tr.joints[0]) if len(tr.joints) else 0):
            points = " ".join(f"{_num(x(tr.t[i]))},{_num(yj(tr.joints[i][j]))}" for i in keep)
            body.append(
                f'<polyline class="joint-trace" points="{points}" fill="none" stroke="{colour}" '
                f'stroke-width="1.2" opacity="0.75"><title>{escape(tr.label)}, joint {j + 1}</title></polyline>'
            )
        points = " ".join(f"{_num(x(tr.t[i]))},{_num(yg(tr.gripper[i]))}" for i in keep)
        body.append(
            f'<polyline class="gripper-trace" points="{points}" fill="none" stroke="{colour}" '
            f'stroke-width="2"><title>{escape(tr.label)}, gripper</title></polyline>'
        )
        legend_x = left + plot_width - 150 * (len(traces) - k)
        body.append(
            f'<line x1="{legend_x}" y1="{top - 10}" x2="{legend_x + 18}" y2="{top - 10}" stroke="{colour}" '
            f'stroke-width="3"/>'
        )
        body.append(_text(legend_x + 22, top - 10, tr.label[:22]))
    axis_y = g_top + gripper_height + 14
    for tick in nice_ticks(0.0, t_max, count=5):
        body.append(_text(x(tick), axis_y, f"{tick:g}", anchor="middle", css="tick"))
    body.append(
        _text(left + plot_width / 2, axis_y + 18, "time since the episode started (s)", anchor="middle")
    )
    steps = ", ".join(f"{tr.label}: {len(tr.t)} steps" for tr in traces)
    desc = f"Joint and gripper traces over time. {steps}." if traces else "No trajectory was recorded."
    return _svg(
        ident=ident,
        width=width,
        height=height,
        title=title,
        desc=desc,
        body=body,
        css_class="chart trajectory-plot",
        min_width=0.85 * width,
    )
