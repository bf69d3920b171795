"""`arena-eval run --judge`: the default follows the robot, and the help says which it is."""

from __future__ import annotations

import pytest

from evaluator_client import cli
from evaluator_client.judge import AutoJudge, HumanJudge


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["run"], "auto"),
        (["run", "--robot", "replica"], "auto"),
        (["run", "--robot", "droid"], "human"),
        (["run", "--robot", "replica", "--judge", "human"], "human"),
    ],
)
def test_the_judge_follows_the_robot_unless_named(argv, kind):
    assert cli._judge_kind(cli._parser().parse_args(argv)) == kind


@pytest.mark.parametrize(
    ("argv", "judge"),
    [
        (["run"], AutoJudge),
        (["run", "--robot", "droid", "--no-ui"], HumanJudge),
        (["run", "--robot", "replica", "--judge", "human", "--no-ui"], HumanJudge),
    ],
)
def test_the_terminal_judges_without_a_screen(argv, judge):
    assert type(cli._judge(cli._parser().parse_args(argv))) is judge


def test_auto_judge_on_droid_is_refused():
    with pytest.raises(cli.CliError, match="needs the replica"):
        cli._judge(cli._parser().parse_args(["run", "--robot", "droid", "--judge", "auto"]))


def test_the_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Default: auto with --robot replica, human with --robot droid" in text
    assert "you answer (default)" not in text
