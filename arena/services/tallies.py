"""Running comparison counts (``ComparisonTally``) kept in step with the preferences, one per pair, verdict,
lab, task category and robot platform (the session robot's, so the ranking can refit per robot type).

``tally_add`` runs inside the transaction that stores a valid preference; ``tallies_rebuild`` recomputes every
tally from the preferences with one GROUP BY (after a restore, or if an operator edited preferences by hand).
"""

from __future__ import annotations

from django.db import connection, transaction

from arena.models import ComparisonTally, Preference

_GREATEST = {"postgresql": "GREATEST", "sqlite": "MAX"}

UPSERT = """
    INSERT INTO arena_comparisontally
        (policy_a_id, policy_b_id, choice, lab_id, task_category, platform, n, progress_a_sum, progress_b_sum,
         last_preference_id)
    VALUES (%s, %s, %s, %s, %s, %s, 1, %s, %s, %s)
    ON CONFLICT (policy_a_id, policy_b_id, choice, lab_id, task_category, platform) DO UPDATE SET
        n = arena_comparisontally.n + 1,
        progress_a_sum = arena_comparisontally.progress_a_sum + EXCLUDED.progress_a_sum,
        progress_b_sum = arena_comparisontally.progress_b_sum + EXCLUDED.progress_b_sum,
        last_preference_id = {greatest}(arena_comparisontally.last_preference_id, EXCLUDED.last_preference_id)
"""

REBUILD = """
    INSERT INTO arena_comparisontally
        (policy_a_id, policy_b_id, choice, lab_id, task_category, platform, n, progress_a_sum, progress_b_sum,
         last_preference_id)
    SELECT p.policy_a_id, p.policy_b_id, p.choice, p.lab_id, p.task_category, r.platform, COUNT(*),
           SUM(p.progress_a), SUM(p.progress_b), MAX(p.id)
    FROM arena_preference p
    JOIN arena_evaluationsession s ON s.id = p.session_id
    JOIN arena_robot r ON r.id = s.robot_id
    WHERE p.valid
    GROUP BY p.policy_a_id, p.policy_b_id, p.choice, p.lab_id, p.task_category, r.platform
"""


def tally_add(*, preference: Preference, platform: str) -> None:
    """Count one stored preference made on a robot of ``platform`` (call inside its transaction; invalid
    preferences are not counted)."""
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
                platform,
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
