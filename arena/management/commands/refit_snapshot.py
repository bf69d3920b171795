"""``manage.py refit_snapshot FILE``: refit a downloaded ``fitted-<version>.csv`` and print every score.

The file holds exactly the rows a snapshot was fitted on, so the printed scores match the published ones to
1e-9; the printed sha256 matches the snapshot's data hash when the file is intact.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from arena.selectors.leaderboard import fitted_rows_hash, fitted_rows_refit

MAX_BYTES = 512 * 1024 * 1024


class Command(BaseCommand):
    help = "Refit a snapshot's fitted-rows CSV (downloaded from the leaderboard) and print its scores."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="fitted-<version>.csv from the leaderboard's downloads")

    def handle(self, *args, **options) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"file: {path} does not exist")
        if path.stat().st_size > MAX_BYTES:
            raise CommandError(f"file: {path} is larger than {MAX_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
        try:
            scores = fitted_rows_refit(text)
        except (ValueError, IndexError) as exc:
            raise CommandError(f"file: not a fitted-rows CSV ({exc})") from exc
        self.stdout.write(f"sha256 {fitted_rows_hash(text)}")
        self.stdout.write("slug,score,ci_low,ci_high,rank_low,rank_high")
        for slug, row in sorted(scores.items(), key=lambda item: -item[1]["score"]):
            self.stdout.write(
                f"{slug},{row['score']!r},{row['ci_low']!r},{row['ci_high']!r},{row['rank_low']},{row['rank_high']}"
            )
