"""Judges: automatic scores from the simulator, human prompts that re-ask on bad input."""

from pathlib import Path

import numpy as np

from evaluator_client.episode import EpisodeResult
from evaluator_client.judge import AutoJudge, HumanJudge


def result(progress, success=False, failure=None):
    return EpisodeResult(steps=10, progress=progress, success=success, failure=failure)


def test_auto_judge_prefers_more_progress_and_ties_within_margin():
    judge = AutoJudge(margin=5)
    assert judge.progress("A", result(87.4)) == 87
    choice, reason, valid = judge.preference(result(90), result(40))
    assert (choice, valid) == ("A", True) and "A" in reason and reason
    assert judge.preference(result(40), result(90))[0] == "B"
    assert judge.preference(result(50), result(53))[0] == "tie"
    assert judge.preference(result(98, success=False), result(100, success=True))[0] == "B"


def test_auto_judge_prefers_the_clearly_quicker_of_two_successes():
    judge = AutoJudge(margin=5, speed_margin=0.15)

    def succeeded(steps):
        return EpisodeResult(steps=steps, progress=100, success=True, stop_reason="success")

    choice, reason, valid = judge.preference(succeeded(120), succeeded(200))
    assert (choice, valid) == ("A", True) and "120" in reason and "200" in reason
    assert judge.preference(succeeded(300), succeeded(150))[0] == "B"
    assert judge.preference(succeeded(180), succeeded(200))[0] == "tie"  # within 15%
    # a success at the last step (not a held success that stopped the episode) is not timed
    last_step = EpisodeResult(steps=400, progress=100, success=True, stop_reason="max_steps")
    assert judge.preference(succeeded(100), last_step)[0] == "tie"


def test_auto_judge_blames_policy_errors_and_voids_robot_errors():
    judge = AutoJudge()
    assert judge.preference(result(80, failure="policy"), result(10))[0] == "B"
    choice, _, valid = judge.preference(result(80, failure="robot"), result(10))
    assert not valid


class Script:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.prompts = []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        return self.answers.pop(0)


def test_human_judge_reasks_progress_outside_range():
    printed = []
    judge = HumanJudge(input_fn=Script("150", "abc", "-1", "70"), print_fn=printed.append)
    assert judge.progress("A", result(None)) == 70
    assert len(printed) == 3 and all("invalid progress" in line for line in printed)


def test_human_judge_reasks_choice_and_empty_reason():
    printed = []
    script = Script("C", "b", "", "   ", "B picked the block up", "maybe", "y")
    judge = HumanJudge(input_fn=script, print_fn=printed.append)
    assert judge.preference(result(None), result(None)) == ("B", "B picked the block up", True)
    assert sum("invalid choice" in p for p in printed) == 1
    assert sum("invalid reason" in p for p in printed) == 2
    assert sum("invalid validity" in p for p in printed) == 1


def test_human_judge_confirm_and_stop():
    """ "n" (not yet) asks again; only "abort" gives up on the scene."""
    printed: list[str] = []
    judge = HumanJudge(input_fn=Script("n", "y"), print_fn=printed.append, stop_flag=lambda: True)
    assert (
        judge.confirm_start(np.zeros((4, 4, 3), np.uint8), slot="A", image_path=Path("/x/start.png")) is True
    )
    assert sum("Take your time" in p for p in printed) == 1 and "/x/start.png" in printed[0]
    judge = HumanJudge(input_fn=Script("n", "abort"), print_fn=lambda _: None)
    assert judge.confirm_start(np.zeros((4, 4, 3), np.uint8), slot="B") is False
    judge = HumanJudge(input_fn=Script("n"), print_fn=lambda _: None, stop_flag=lambda: True)
    assert judge.should_stop() is True
    assert HumanJudge(input_fn=Script("tie"), print_fn=lambda _: None).should_stop() is False
