"""The running comparison tallies always equal a full GROUP BY over the stored preferences."""

from arena.models import ComparisonTally
from arena.services.tallies import tallies_rebuild
from tests.api.actors import open_session, report_both


def tally_rows() -> list[tuple]:
    return sorted(
        ComparisonTally.objects.values_list(
            "policy_a_id",
            "policy_b_id",
            "choice",
            "lab_id",
            "task_category",
            "n",
            "progress_a_sum",
            "progress_b_sum",
            "last_preference_id",
        )
    )


def test_tallies_match_a_rebuild(settings, lab1, robot1, pool):
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 50
    choices = ["A", "B", "tie", "A", "A", "B", "tie", "A"]
    for k, choice in enumerate(choices):
        session = open_session(lab1)
        report_both(lab1, session["id"])
        body = {"choice": choice, "reason": "r", "valid": k != 3}  # one invalid session, never counted
        assert lab1.post(f"/api/v1/sessions/{session['id']}/preference/", body).status_code == 201
    incremental = tally_rows()
    assert sum(row[5] for row in incremental) == len(choices) - 1
    assert tallies_rebuild() == len(incremental)
    assert tally_rows() == incremental
