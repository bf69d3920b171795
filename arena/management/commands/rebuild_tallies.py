"""``manage.py rebuild_tallies``: recompute the ranking's running comparison counts from the preferences."""

from django.core.management.base import BaseCommand

from arena.services.tallies import tallies_rebuild


class Command(BaseCommand):
    help = "Recompute the comparison tallies from the stored preferences (after a restore or a manual edit)."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"{tallies_rebuild()} tally rows")
