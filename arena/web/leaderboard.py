"""The public ranking: the leaderboard page, the methodology page and the downloads of a snapshot."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

import ranking
from arena.api.leaderboard import LeaderboardOut
from arena.errors import NotFound
from arena.models import RankingSnapshot
from arena.selectors.leaderboard import (
    comparison_groups,
    fitted_rows_csv,
    leaderboard,
    snapshot_get,
    snapshot_latest,
)
from arena.selectors.pages import COMPARISON_LOG_HEADER, comparison_log
from arena.services.ranking import MIN_CATEGORY_COMPARISONS
from arena.services.slices import MIN_AGREEMENT_POLICIES, MIN_SLICE_COMPARISONS
from arena.web import charts
from arena.web.render import render_page

HEATMAP_MAX_POLICIES = 30
TABLE_COLUMNS = (
    "rank",
    "rank_low",
    "rank_high",
    "group",
    "slug",
    "name",
    "organization",
    "score",
    "ci_low",
    "ci_high",
    "n_comparisons",
    "n_labs",
    "win_rate",
    "mean_progress",
    "license",
    "open_weights",
    "status",
    "provisional",
    "last_evaluated",
)


def display_row(row: dict[str, Any], *, lo: float, hi: float) -> dict[str, Any]:
    """A snapshot row plus what the table prints: rank band, rounded score, +x/-y, inline CI bar, percentages.

    Snapshots fitted before rank bands existed show their single rank."""
    low, high = row.get("rank_low", row["rank"]), row.get("rank_high", row["rank"])
    return {
        **row,
        "rank_shown": str(low) if low == high else f"{low}\u2013{high}",
        "score_shown": round(row["score"]),
        "plus": round(row["ci_high"] - row["score"]),
        "minus": round(row["score"] - row["ci_low"]),
        "ci_bar": charts.ci_bar(score=row["score"], low=row["ci_low"], high=row["ci_high"], lo=lo, hi=hi),
        "win_pct": None if row["win_rate"] is None else round(100 * row["win_rate"]),
        "last_evaluated_at": parse_datetime(row["last_evaluated"]) if row.get("last_evaluated") else None,
    }


def _display_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    ends = [v for r in rows for v in (r["ci_low"], r["ci_high"]) if v is not None and math.isfinite(v)]
    lo, hi = (min(ends), max(ends)) if ends else (0.0, 1.0)
    return [display_row(r, lo=lo, hi=hi) for r in rows]


def _heatmaps(snapshot: RankingSnapshot, order: list[str]) -> dict[str, Any]:
    """Win-fraction and comparison-count heatmaps of the ``HEATMAP_MAX_POLICIES`` best, in rank order."""
    matrices = snapshot.matrices
    position = {slug: k for k, slug in enumerate(matrices["slugs"])}
    slugs = [s for s in order if s in position][:HEATMAP_MAX_POLICIES]
    idx = [position[s] for s in slugs]
    wins, counts = matrices["wins"], matrices["counts"]
    fraction = [[wins[i][j] / counts[i][j] if counts[i][j] > 0 else None for j in idx] for i in idx]
    count = [[counts[i][j] if counts[i][j] > 0 else None for j in idx] for i in idx]
    n = len(slugs)
    frac_text = [["" if v is None else f"{round(100 * v)}" for v in row] for row in fraction]
    frac_titles = [
        [
            f"{slugs[i]} vs {slugs[j]}: "
            + (
                "no comparisons"
                if (f := fraction[i][j]) is None
                else f"won {100 * f:.0f}% of {count[i][j]:g}"
            )
            for j in range(n)
        ]
        for i in range(n)
    ]
    count_text = [["" if v is None else f"{v:.2g}" if v < 10 else f"{v:.0f}" for v in row] for row in count]
    count_titles = [
        [
            f"{slugs[i]} vs {slugs[j]}: {0 if count[i][j] is None else count[i][j]:g} comparisons"
            for j in range(n)
        ]
        for i in range(n)
    ]
    shown = (
        f"the top {n} of {len(matrices['slugs'])} policies" if n < len(matrices["slugs"]) else f"{n} policies"
    )
    return {
        "truncated": n < len(matrices["slugs"]),
        "win_fraction": charts.heatmap(
            labels=slugs,
            values=fraction,
            ident="heatmap-win-fraction",
            kind="fraction",
            title="Pairwise win fraction (row policy against column policy)",
            desc=f"Share of comparisons the row policy won against the column policy, ties counted half, for "
            f"{shown} in rank order; grey where the pair never met.",
            cell_text=frac_text,
            cell_titles=frac_titles,
        ),
        "counts": charts.heatmap(
            labels=slugs,
            values=count,
            ident="heatmap-counts",
            kind="count",
            title="Comparisons per pair",
            desc=f"Number of counted comparisons of each pair for {shown}; grey where the pair never met.",
            cell_text=count_text,
            cell_titles=count_titles,
        ),
    }


def _order_effect(model: dict[str, Any]) -> dict[str, Any] | None:
    """The fitted advantage of running first, in nats and in score points, or None when not estimated."""
    if model.get("order_effect") is None:
        return None
    low, high = model["order_effect_ci"]
    return {
        "nats": model["order_effect"],
        "low": low,
        "high": high,
        "points": round(ranking.ELO_SCALE * model["order_effect"]),
        "win_pct": round(100 / (1 + math.exp(-model["order_effect"]))),
        "significant": low > 0 or high < 0,
    }


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("web-leaderboard")


SORT_KEYS: dict[str, Any] = {
    "rank": lambda r: (r.get("rank_low", r["rank"]), -r["score"]),
    "name": lambda r: r["name"].lower(),
    "organization": lambda r: r["organization"].lower(),
    "score": lambda r: r["score"],
    "n_comparisons": lambda r: r["n_comparisons"],
    "n_labs": lambda r: r["n_labs"],
    "win_rate": lambda r: -1.0 if r["win_rate"] is None else r["win_rate"],
    "mean_progress": lambda r: -1.0 if r["mean_progress"] is None else r["mean_progress"],
    "license": lambda r: (r["license"] or "").lower(),
    "last_evaluated": lambda r: r.get("last_evaluated") or "",
}
COLUMNS = (  # (sort key or "", header, numeric, tooltip)
    ("rank", "Rank", False, "95% rank band: every rank the data allow, family-wise over the board"),
    ("name", "Policy", False, ""),
    ("organization", "Organization", False, ""),
    ("score", "Score", True, ""),
    ("", "95% CI", True, "95% interval of the score, as +above/-below"),
    ("", "Interval", False, ""),
    ("n_comparisons", "Comparisons", True, "Counted comparisons (valid, from labs whose votes count)"),
    ("n_labs", "Labs", True, ""),
    ("win_rate", "Win rate", True, ""),
    ("mean_progress", "Progress", True, "Mean task progress (0-100) the evaluators reported"),
    ("license", "License", False, ""),
    ("last_evaluated", "Last evaluated", False, ""),
)
DESCENDING_FIRST = {"score", "n_comparisons", "n_labs", "win_rate", "mean_progress", "last_evaluated"}


@dataclass(frozen=True)
class BoardQuery:
    """What the visitor asked of the table (query parameters, so every view has a URL and works without
    scripts): ``view`` a slice key ("all" or one of the snapshot's slices), ``q`` a search in policy names,
    slugs and organizations, ``open`` open-weights policies only, ``sort``/``dir`` the order."""

    view: str = "all"
    q: str = ""
    open_only: bool = False
    sort: str = "rank"
    descending: bool = False

    @classmethod
    def from_request(cls, request: HttpRequest) -> BoardQuery:
        get = request.GET
        sort = get.get("sort", "rank")
        sort = sort if sort in SORT_KEYS else "rank"
        default_dir = "desc" if sort in DESCENDING_FIRST else "asc"
        return cls(
            view=get.get("view", "all")[:120] or "all",
            q=get.get("q", "").strip()[:100],
            open_only=get.get("open") == "1",
            sort=sort,
            descending=get.get("dir", default_dir) == "desc",
        )

    def url(self, **changes: Any) -> str:
        q = replace(self, **changes)
        params = {"view": q.view if q.view != "all" else None, "q": q.q or None}
        params["open"] = "1" if q.open_only else None
        if q.sort != "rank" or q.descending:
            params["sort"], params["dir"] = q.sort, "desc" if q.descending else "asc"
        query = urlencode({k: v for k, v in params.items() if v})
        return reverse("web-leaderboard") + (f"?{query}" if query else "")

    def keep(self, row: dict[str, Any]) -> bool:
        if self.open_only and not row.get("open_weights"):
            return False
        needle = self.q.lower()
        return not needle or any(
            needle in (row.get(k) or "").lower() for k in ("name", "slug", "organization")
        )

    def arrange(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = [r for r in rows if self.keep(r)]
        return sorted(kept, key=SORT_KEYS[self.sort], reverse=self.descending)


def _header(query: BoardQuery) -> list[dict[str, Any]]:
    out = []
    for key, label, numeric, tooltip in COLUMNS:
        entry = {"key": key, "label": label, "num": numeric, "title": tooltip, "href": "", "aria_sort": ""}
        if key:
            active = query.sort == key
            descending = (not query.descending) if active else key in DESCENDING_FIRST
            entry["href"] = query.url(sort=key, descending=descending)
            entry["aria_sort"] = ("descending" if query.descending else "ascending") if active else "none"
        out.append(entry)
    return out


def _tabs(snapshot: RankingSnapshot, query: BoardQuery) -> list[dict[str, Any]]:
    """The tab rows (scope, robot type, task category), each tab a link with its slice's own counts."""
    slices = snapshot.slices or {}
    boards = slices.get("boards", {})
    tabs = slices.get("tabs", {})
    overall = {"key": "all", "label": "All", "n_comparisons": snapshot.n_comparisons, "fitted": True}
    rows = [
        ("scope", "Robots", [overall] + [boards[k] for k in tabs.get("scope", []) if k in boards]),
        ("robot", "Robot type", [boards[k] for k in tabs.get("robot", []) if k in boards]),
        ("category", "Task category", [boards[k] for k in tabs.get("category", []) if k in boards]),
    ]
    return [
        {
            "name": name,
            "label": label,
            "tabs": [
                {
                    "key": b["key"],
                    "label": {"real": "Real robots", "replica": "Replica"}.get(b["key"], b["label"]),
                    "n": b["n_comparisons"],
                    "fitted": b.get("fitted", True),
                    "current": b["key"] == query.view,
                    "href": query.url(view=b["key"]),
                }
                for b in boards_
            ],
        }
        for name, label, boards_ in rows
        if boards_ and not (name != "scope" and len(boards_) < 2 and boards_[0]["key"] != query.view)
    ]


def _board_for(snapshot: RankingSnapshot, query: BoardQuery) -> dict[str, Any] | None:
    """The selected slice's board (``"all"``: the snapshot's own), or None for an unknown view."""
    if query.view == "all":
        return {
            "key": "all",
            "label": "All comparisons",
            "n_comparisons": snapshot.n_comparisons,
            "n_policies": snapshot.n_policies,
            "n_labs": len(snapshot.integrity),
            "fitted": True,
            "rows": snapshot.ratings,
            "model": snapshot.model,
        }
    return (snapshot.slices or {}).get("boards", {}).get(query.view)


def agreement_context(snapshot: RankingSnapshot | None) -> dict[str, Any] | None:
    """The real-vs-replica agreement of the snapshot for the pages: statistics, rows and a scatter plot."""
    stats = (snapshot.slices or {}).get("agreement") if snapshot else None
    if not stats:
        return None
    rows = [
        {
            **r,
            "real_band": _band(r["real"]["rank_low"], r["real"]["rank_high"]),
            "replica_band": _band(r["replica"]["rank_low"], r["replica"]["rank_high"]),
        }
        for r in stats["policies"]
    ]
    return {
        **stats,
        "rows": rows,
        "chart": charts.agreement_plot(
            [
                charts.Pair(
                    label=r["slug"],
                    x=r["real"]["score"],
                    y=r["replica"]["score"],
                    href=reverse("web-policy", args=[r["slug"]]),
                )
                for r in rows
            ],
            ident="agreement-plot",
            title="Real-robot score against replica score",
            x_label="score on real robots",
            y_label="score in the replica",
        ),
    }


def _band(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}\u2013{high}"


@require_GET
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    snapshot = snapshot_latest(fitted_rows=False)
    board = leaderboard(snapshot)
    query = BoardQuery.from_request(request)
    context: dict[str, Any] = {"snapshot": snapshot, "board": board, "query": query}
    if snapshot is not None:
        view = _board_for(snapshot, query)
        if view is None:
            query = replace(query, view="all")
            view = _board_for(snapshot, query)
        assert view is not None
        ranked_all = [r for r in view["rows"] if not r["provisional"]]
        main, *separate = comparison_groups(ranked_all) or [[]]
        rated = view["rows"]
        context.update(
            query=query,
            view=view,
            tab_rows=_tabs(snapshot, query),
            header=_header(query),
            rows=_display_rows(query.arrange(main)),
            n_main=len(main),
            separate_groups=[
                {"number": k, "table_id": f"group-{k}", "rows": _display_rows(query.arrange(rows))}
                for k, rows in enumerate(separate, start=1)
            ],
            order_effect=_order_effect(view["model"]),
            provisional=_display_rows(query.arrange([r for r in rated if r["provisional"]])),
            n_labs=len(snapshot.integrity),
            min_comparisons=settings.ARENA_PROVISIONAL_MIN_COMPARISONS,
            min_slice_comparisons=MIN_SLICE_COMPARISONS,
            agreement=agreement_context(snapshot),
            ci_plot=charts.ci_plot(
                [
                    charts.Interval(
                        label=r["slug"] + (" (provisional)" if r["provisional"] else ""),
                        score=r["score"],
                        low=r["ci_low"],
                        high=r["ci_high"],
                        href=reverse("web-policy", args=[r["slug"]]),
                    )
                    for r in rated
                ],
                ident="ci-plot",
                title=f"Scores with 95% confidence intervals: {view['label']}",
            )
            if rated
            else None,
            heatmaps=_heatmaps(snapshot, [r["slug"] for r in snapshot.ratings])
            if snapshot.ratings and query.view == "all"
            else None,
        )
    return render_page(request, "arena/leaderboard.html", context)


@require_GET
def methodology_page(request: HttpRequest) -> HttpResponse:
    snapshot = snapshot_latest(fitted_rows=False)
    return render_page(
        request,
        "arena/methodology.html",
        {
            "snapshot": snapshot,
            "model": snapshot.model if snapshot else {},
            "order_effect": _order_effect(snapshot.model) if snapshot else None,
            "family_alpha_pct": round(100 * ranking.FAMILY_ALPHA),
            "prior_sd_range": ranking.PRIOR_SD_RANGE,
            "lab_max_share": settings.ARENA_LAB_MAX_SHARE,
            "lab_max_share_pct": round(100 * settings.ARENA_LAB_MAX_SHARE),
            "org_max_share": settings.ARENA_ORG_MAX_SHARE,
            "board_max_share": settings.ARENA_BOARD_MAX_SHARE,
            "trust_ramp": f"{settings.ARENA_LAB_TRUST_RAMP:g}",
            "min_comparisons": settings.ARENA_PROVISIONAL_MIN_COMPARISONS,
            "min_category_comparisons": MIN_CATEGORY_COMPARISONS,
            "min_slice_comparisons": MIN_SLICE_COMPARISONS,
            "min_agreement_policies": MIN_AGREEMENT_POLICIES,
            "agreement": agreement_context(snapshot),
        },
    )


def _snapshot_or_404(version: int) -> RankingSnapshot:
    try:
        return snapshot_get(version=version)
    except NotFound as exc:
        raise Http404(exc.message) from exc


class _Echo:
    """A file-like object whose ``write`` returns the line, so ``csv.writer`` can feed a response stream."""

    def write(self, value: str) -> str:
        return value


def _csv_stream(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow(row)


def _attachment(response: HttpResponse, filename: str) -> HttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_GET
def table_csv(request: HttpRequest, version: int) -> HttpResponse:
    """The snapshot's table, one row per rated policy (provisional ones flagged), in leaderboard order."""
    snapshot = _snapshot_or_404(version)
    rows = ([r.get(c) for c in TABLE_COLUMNS] for r in snapshot.ratings)
    response = StreamingHttpResponse(_csv_stream(TABLE_COLUMNS, rows), content_type="text/csv; charset=utf-8")
    return _attachment(response, f"leaderboard-{snapshot.version}.csv")


@require_GET
def table_json(request: HttpRequest, version: int) -> HttpResponse:
    """The snapshot's table in the body the API's ``/api/v1/leaderboard/`` gives for the newest snapshot."""
    snapshot = _snapshot_or_404(version)
    response = JsonResponse(LeaderboardOut(leaderboard(snapshot)).data)
    return _attachment(response, f"leaderboard-{snapshot.version}.json")


@require_GET
def latest_download(request: HttpRequest, fmt: str) -> HttpResponse:
    snapshot = snapshot_latest()
    if snapshot is None:
        raise Http404("No ranking snapshot yet.")
    name = "web-leaderboard-csv" if fmt == "csv" else "web-leaderboard-json"
    return redirect(name, version=snapshot.version)


@require_GET
def comparisons_csv(request: HttpRequest, version: int) -> HttpResponse:
    """The anonymized log of the comparisons the snapshot fitted, one row each, with their weights in the fit
    (see ``comparison_log``), streamed; ``X-Data-Hash`` is the snapshot's data hash (of ``fitted.csv``)."""
    snapshot = _snapshot_or_404(version)
    response = StreamingHttpResponse(
        _csv_stream(COMPARISON_LOG_HEADER, comparison_log(snapshot=snapshot)),
        content_type="text/csv; charset=utf-8",
    )
    response["X-Data-Hash"] = snapshot.data_hash
    return _attachment(response, f"comparisons-{snapshot.version}.csv")


@require_GET
def fitted_csv(request: HttpRequest, version: int) -> HttpResponse:
    """Exactly the rows the snapshot fitted (same window, exclusions and weights); the file's sha256 is the
    snapshot's data hash, also sent as ``X-Data-Hash``. ``manage.py refit_snapshot FILE`` refits it."""
    snapshot = _snapshot_or_404(version)
    response = HttpResponse(fitted_rows_csv(snapshot.fitted_rows), content_type="text/csv; charset=utf-8")
    response["X-Data-Hash"] = snapshot.data_hash
    return _attachment(response, f"fitted-{snapshot.version}.csv")
