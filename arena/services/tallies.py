"""Running comparison counts (``ComparisonTally``) kept in step with the preferences.

``tally_add`` runs inside the transaction that stores a valid preference; ``tallies_rebuild`` recomputes every
tally from the preferences with one GROUP BY (after a restore, or if an operator edited preferences by hand).
"""

from __future__ import annotations

from django.db import connection, transaction

from arena.models import ComparisonTally, Preference

_GREATEST = {"postgresql": "GREATEST", "sqlite": "MAX"}

UPSERT = """
    INSERT INTO arena_comparisontally
        (policy_a_id, policy_b_id, choice, lab_id, task_category, n, progress_a_sum, progress_b_sum,
         last_preference_id)
    VALUES (%s, %s, %s, %s, %s, 1, %s, %s, %s)
    ON CONFLICT (policy_a_id, policy_b_id, choice, lab_id, task_category) DO UPDATE SET
        n = arena_comparisontally.n + 1,
        progress_a_sum = arena_comparisontally.progress_a_sum + EXCLUDED.progress_a_sum,
        progress_b_sum = arena_comparisontally.progress_b_sum + EXCLUDED.progress_b_sum,
        last_preference_id = {greatest}(arena_comparisontally.last_preference_id, EXCLUDED.last_preference_id)
"""

REBUILD = """
    INSERT INTO arena_comparisontally
        (policy_a_id, policy_b_id, choice, lab_id, task_category, n, progress_a_sum, progress_b_sum,
         last_preference_id)
    SELECT policy_a_id, policy_b_id, choice, lab_id, task_category, COUNT(*), SUM(progress_a), SUM(progress_b),
           MAX(id)
    FROM arena_preference WHERE valid
    GROUP BY policy_a_id, policy_b_id, choice, lab_id, task_category
"""


def tally_add(*, preference: Preference) -> None:
    """Count one stored preference (call inside its transaction; invalid preferences are not counted)."""
    if not preference.valid:
        return
    sql = UPSERT.format(greatest=_GREATEST[connection.vendor])
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                preference.policy_a_id,
                preference.policy_b_id,
                preference.choice,
                preference.lab_id,
                preference.task_category,
                preference.progress_a,
                preference.progress_b,
                preference.pk,
            ],
        )


def tallies_rebuild() -> int:
    """Recompute every tally from the stored preferences; returns the number of tally rows."""
    with transaction.atomic():
        ComparisonTally.objects.all().delete()
        with connection.cursor() as cursor:
            cursor.execute(REBUILD)
        return ComparisonTally.objects.count()
