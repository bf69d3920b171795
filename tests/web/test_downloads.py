"""Downloads of a snapshot: the table as CSV and JSON, ``latest`` redirects, the anonymized comparison log."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest
from django.test import Client

from arena.models import Lab, Preference, RankingSnapshot
from arena.services.ranking import ranking_snapshot_create
from arena.web.leaderboard import TABLE_COLUMNS


def latest() -> RankingSnapshot:
    return RankingSnapshot.objects.order_by("-version").first()


def streamed_csv(path: str) -> list[dict[str, str]]:
    response = Client().get(path)
    assert response.status_code == 200
    assert response.streaming, "CSV downloads are streamed"
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment;")
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/leaderboard/latest.csv",
        "/leaderboard/7.csv",
        "/leaderboard/7.json",
        "/leaderboard/7/comparisons.csv",
    ],
)
def test_missing_snapshots_are_404(path):
    assert Client().get(path).status_code == 404


def _cells(rows, outcome_key: str, weighted: bool) -> dict[tuple[str, ...], float]:
    cells: dict[tuple[str, ...], float] = {}
    outcome = {"A": "1.0", "B": "0.0", "tie": "0.5"}
    for r in rows:
        key = (
            r["policy_a"],
            r["policy_b"],
            outcome.get(r[outcome_key], r[outcome_key]),
            r["task_category"],
            r["lab"],
        )
        cells[key] = cells.get(key, 0.0) + (float(r["weight"]) if weighted else 1.0)
    return cells


class TestDownloadsOfTheLeague:
    """Downloads of the league's snapshots. The league is built once for the class (see tests/web/conftest.py)."""

    def test_table_csv_has_every_rated_policy_in_leaderboard_order(self, league):
        snapshot = latest()
        rows = streamed_csv(f"/leaderboard/{snapshot.version}.csv")
        assert list(rows[0]) == list(TABLE_COLUMNS)
        assert [r["slug"] for r in rows] == [r["slug"] for r in snapshot.ratings]
        for row, rating in zip(rows, snapshot.ratings, strict=True):
            assert int(row["rank"]) == rating["rank"]
            assert float(row["score"]) == pytest.approx(rating["score"])
            assert row["provisional"] == str(rating["provisional"])

    def test_table_json_is_the_api_body(self, league, anonymous):
        snapshot = latest()
        response = Client().get(f"/leaderboard/{snapshot.version}.json")
        assert response.status_code == 200
        assert json.loads(response.content) == anonymous.get("/api/v1/leaderboard/").json()

    def test_older_versions_stay_downloadable(self, league):
        first = RankingSnapshot.objects.order_by("version").first()
        assert first.version < latest().version
        rows = streamed_csv(f"/leaderboard/{first.version}.csv")
        assert [r["slug"] for r in rows] == [r["slug"] for r in first.ratings]

    @pytest.mark.parametrize("fmt", ["csv", "json"])
    def test_latest_redirects_to_the_newest_version(self, league, fmt):
        response = Client().get(f"/leaderboard/latest.{fmt}")
        assert response.status_code == 302
        assert response["Location"] == f"/leaderboard/{latest().version}.{fmt}"

    def test_comparison_log_has_one_anonymous_row_per_counted_preference(self, league):
        snapshot = latest()
        rows = streamed_csv(f"/leaderboard/{snapshot.version}/comparisons.csv")
        assert list(rows[0]) == ["policy_a", "policy_b", "outcome", "task_category", "date", "lab", "weight"]
        assert len(rows) == snapshot.n_comparisons
        stored = list(Preference.objects.order_by("pk").select_related("policy_a", "policy_b"))
        assert [(r["policy_a"], r["policy_b"], r["outcome"], r["task_category"]) for r in rows] == [
            (p.policy_a.slug, p.policy_b.slug, p.choice, p.task_category) for p in stored
        ]
        assert {r["lab"] for r in rows} == {"1", "2"}
        assert {r["date"] for r in rows} == {p.created_at.date().isoformat() for p in stored}
        text = json.dumps(rows)
        for secret in ("Berkeley", "Stanford", "watched both", *(str(p.session_id) for p in stored)):
            assert secret not in text

    def test_comparison_log_is_exactly_the_fitted_rows(self, league):
        snapshot = latest()
        response = Client().get(f"/leaderboard/{snapshot.version}/comparisons.csv")
        assert response["X-Data-Hash"] == snapshot.data_hash
        log = streamed_csv(f"/leaderboard/{snapshot.version}/comparisons.csv")
        fitted = list(
            csv.DictReader(
                io.StringIO(Client().get(f"/leaderboard/{snapshot.version}/fitted.csv").content.decode())
            )
        )
        counts = {k: float(v) for k, v in _cells(fitted, "outcome", False).items()}
        for r in fitted:
            key = (r["policy_a"], r["policy_b"], r["outcome"], r["task_category"], r["lab"])
            counts[key] += int(r["count"]) - 1
        assert _cells(log, "outcome", False) == counts
        weights = {}
        for r in fitted:
            key = (r["policy_a"], r["policy_b"], r["outcome"], r["task_category"], r["lab"])
            weights[key] = weights.get(key, 0.0) + float(r["weight"])
        assert _cells(log, "outcome", True) == pytest.approx(weights, rel=1e-12)

    def test_comparison_log_of_a_version_does_not_change_later(self, league):
        # excluding a lab after a snapshot leaves that snapshot's log (and fitted rows) as they were fitted
        older = RankingSnapshot.objects.order_by("version").first()
        newest = latest()
        before = {
            v: streamed_csv(f"/leaderboard/{v}/comparisons.csv") for v in (older.version, newest.version)
        }
        assert len(before[older.version]) == older.n_comparisons
        Lab.objects.filter(name="Stanford Lab").update(votes_excluded=True)
        for version, rows in before.items():
            assert streamed_csv(f"/leaderboard/{version}/comparisons.csv") == rows
        assert {r["lab"] for r in before[newest.version]} == {"1", "2"}
        assert RankingSnapshot.objects.get(version=newest.version).data_hash == newest.data_hash
        refitted = ranking_snapshot_create()  # the next version leaves the excluded lab out
        rows = streamed_csv(f"/leaderboard/{refitted.version}/comparisons.csv")
        assert (
            len(rows) == refitted.n_comparisons == Preference.objects.filter(lab__name="Berkeley Lab").count()
        )
        assert {r["lab"] for r in rows} == {"1"}

    def test_fitted_rows_refit_to_the_published_scores(self, league, tmp_path):
        # the download is exactly what was fitted: hash-checked, and a documented command reproduces the scores
        from django.core.management import call_command

        snapshot = latest()
        response = Client().get(f"/leaderboard/{snapshot.version}/fitted.csv")
        assert response.status_code == 200 and response["X-Data-Hash"] == snapshot.data_hash
        text = response.content.decode()
        assert hashlib.sha256(response.content).hexdigest() == snapshot.data_hash
        rows = list(csv.DictReader(io.StringIO(text)))
        assert sum(int(r["count"]) for r in rows) == snapshot.n_comparisons
        path = tmp_path / "fitted.csv"
        path.write_text(text)
        out = io.StringIO()
        call_command("refit_snapshot", str(path), stdout=out)
        lines = out.getvalue().splitlines()
        assert lines[0] == f"sha256 {snapshot.data_hash}"
        refitted = {r["slug"]: r for r in csv.DictReader(io.StringIO("\n".join(lines[1:])))}
        assert set(refitted) == {r["slug"] for r in snapshot.ratings}
        for row in snapshot.ratings:
            again = refitted[row["slug"]]
            for key in ("score", "ci_low", "ci_high"):
                assert abs(float(again[key]) - row[key]) <= 1e-9
            assert (int(again["rank_low"]), int(again["rank_high"])) == (row["rank_low"], row["rank_high"])

    def test_fitted_rows_of_older_versions_do_not_change(self, league):
        first = RankingSnapshot.objects.order_by("version").first()
        body = Client().get(f"/leaderboard/{first.version}/fitted.csv").content
        assert hashlib.sha256(body).hexdigest() == first.data_hash
        assert sum(int(r["count"]) for r in csv.DictReader(io.StringIO(body.decode()))) == first.n_comparisons
