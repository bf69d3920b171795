"""Operator judgements, kept apart from the control loop.

A :class:`Judge` confirms the start scene, may stop or abort an episode, scores each policy's progress (0-100)
and states a preference (A / B / tie) with a reason and whether the session is valid; the runner also tells it
what is going on (session, slot, steps, camera frames, the outcome) so that a screen can show it.
:class:`HumanJudge` asks on the terminal and re-asks on bad input naming the field; :class:`AutoJudge` derives
everything from the simulator's progress (replica sessions, benchmarks, tests); the operator screen
(:class:`evaluator_client.screen.OperatorScreen`) asks on a local web page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from evaluator_client.episode import EpisodeResult

CHOICES = ("A", "B", "tie")


class Judge(Protocol):
    def session_started(self, session_id: str, task: str) -> None:
        """A session was assigned for ``task``."""

    def confirm_start(self, image: np.ndarray, *, slot: str, image_path: Path | None = None) -> bool:
        """Whether the scene matches ``image`` (the start scene, also saved at ``image_path``) and slot ``slot``
        may start; False aborts the session (the operator gives up), "not yet" is the judge's to ask again."""

    def episode_started(self, slot: str, max_steps: int, cameras: list[str]) -> None:
        """Slot ``slot``'s episode starts: at most ``max_steps`` steps, frames from ``cameras``."""

    def show_step(self, step: int) -> None:
        """``step`` steps of the episode are done."""

    def show_frames(self, frames: Mapping[str, np.ndarray]) -> None:
        """The latest image of each camera: uint8 (H, W, 3) RGB (about 10 a second)."""

    def should_stop(self) -> bool:
        """Polled during an episode: True ends it (operator stop, or abort)."""

    def abort_requested(self) -> tuple[str, str] | None:
        """``(reason, fault)`` when the operator asked to abort the session (fault ``operator`` or ``robot``)."""

    def episode_finished(self, slot: str, result: EpisodeResult) -> None:
        """Slot ``slot``'s episode ended with ``result``."""

    def progress(self, slot: str, result: EpisodeResult) -> int:
        """Progress score 0-100 for the policy in ``slot`` ("A" or "B"); asked after both episodes."""

    def preference(self, a_result: EpisodeResult, b_result: EpisodeResult) -> tuple[str, str, bool]:
        """``(choice, reason, valid)``: choice in ``"A" | "B" | "tie"``, a non-empty reason, session validity."""

    def session_finished(self, outcome: Any) -> None:
        """The session ended: ``outcome`` is the runner's ``SessionOutcome`` (``status``, ``reveal``, ...)."""


class _Quiet:
    """The notifications of :class:`Judge`, ignored (for judges with nothing to show)."""

    def session_started(self, session_id: str, task: str) -> None:
        return None

    def episode_started(self, slot: str, max_steps: int, cameras: list[str]) -> None:
        return None

    def show_step(self, step: int) -> None:
        return None

    def show_frames(self, frames: Mapping[str, np.ndarray]) -> None:
        return None

    def abort_requested(self) -> tuple[str, str] | None:
        return None

    def episode_finished(self, slot: str, result: EpisodeResult) -> None:
        return None

    def session_finished(self, outcome: Any) -> None:
        return None


class AutoJudge(_Quiet):
    """Scores from the simulator: progress = the episode's peak progress; a tie when within ``margin`` points.

    Success breaks ties between equal progress (a held success beats a transient one); between two episodes
    that both stopped on a held success, the one that got there in fewer steps wins when it needed at most
    ``1 - speed_margin`` of the other's steps (an operator watching both prefers the quicker, surer policy).
    Sessions where either episode failed through a robot error are invalid; a policy error counts as that
    policy losing.
    """

    def __init__(self, *, margin: float = 5.0, speed_margin: float = 0.15) -> None:
        self.margin = margin
        self.speed_margin = speed_margin

    def confirm_start(self, image: np.ndarray, *, slot: str, image_path: Path | None = None) -> bool:
        return True

    def should_stop(self) -> bool:
        return False

    def progress(self, slot: str, result: EpisodeResult) -> int:
        return int(round(result.progress or 0.0))

    def preference(self, a_result: EpisodeResult, b_result: EpisodeResult) -> tuple[str, str, bool]:
        valid = a_result.failure != "robot" and b_result.failure != "robot"
        if not valid:
            return "tie", "robot error during the session; not comparable", False
        a, b = _score(a_result), _score(b_result)
        a_succ, b_succ = bool(a_result.success), bool(b_result.success)
        if abs(a - b) <= self.margin and a_succ == b_succ:
            quicker = self._quicker(a_result, b_result)
            if quicker:
                return (
                    quicker,
                    f"both succeeded, {quicker} sooner: A in {a_result.steps} steps, B in {b_result.steps}",
                    True,
                )
            return "tie", f"similar progress (A {a:.0f}, B {b:.0f}, margin {self.margin:g})", True
        if abs(a - b) <= self.margin:
            winner = "A" if a_succ else "B"
        else:
            winner = "A" if a > b else "B"
        return winner, f"{winner} got further: A {_describe(a_result)}, B {_describe(b_result)}", True

    def _quicker(self, a_result: EpisodeResult, b_result: EpisodeResult) -> str | None:
        """``"A"`` or ``"B"`` if both episodes stopped on a held success and that one needed clearly fewer steps."""
        if not (a_result.stop_reason == b_result.stop_reason == "success"):
            return None
        a, b = a_result.steps, b_result.steps
        if a <= (1 - self.speed_margin) * b:
            return "A"
        if b <= (1 - self.speed_margin) * a:
            return "B"
        return None


def _score(result: EpisodeResult) -> float:
    return 0.0 if result.failure == "policy" else float(result.progress or 0.0)


def _describe(result: EpisodeResult) -> str:
    if result.failure == "policy":
        return "policy error"
    outcome = "succeeded" if result.success else "did not succeed"
    return f"progress {result.progress or 0.0:.0f}, {outcome}"


class HumanJudge(_Quiet):
    """Asks the operator on the terminal. ``input_fn``/``print_fn`` default to the builtins (scriptable in tests).

    ``stop_flag`` is a callable polled by :meth:`should_stop`, e.g. set by a key listener or a signal handler.
    End of input (Ctrl-D) at a prompt raises ``EOFError``, for the command line to report.
    """

    def __init__(
        self,
        *,
        input_fn: Callable[[str], str] = input,
        print_fn: Callable[[str], None] = print,
        stop_flag: Callable[[], bool] | None = None,
    ) -> None:
        self._input = input_fn
        self._print = print_fn
        self._stop_flag = stop_flag

    def _ask(self, prompt: str, parse: Callable[[str], object], field: str, rule: str) -> object:
        while True:
            raw = self._input(prompt).strip()
            try:
                return parse(raw)
            except ValueError:
                self._print(f"invalid {field}: {rule} (got {raw[:40]!r}); please try again")

    def confirm_start(self, image: np.ndarray, *, slot: str, image_path: Path | None = None) -> bool:
        where = f" ({image_path})" if image_path else ""
        self._print(f"Slot {slot}: restore the scene to match the start image{where}, then confirm.")
        while True:
            answer = self._ask(
                "Scene ready? [y = start / n = not yet / abort]: ",
                _parse_ready,
                "confirmation",
                "answer y, n or abort",
            )
            if answer != "not yet":
                return answer == "ready"
            self._print(f"Take your time: restore the scene to match the start image{where}.")

    def should_stop(self) -> bool:
        return bool(self._stop_flag()) if self._stop_flag is not None else False

    def progress(self, slot: str, result: EpisodeResult) -> int:
        value = self._ask(
            f"Progress of policy {slot} (0-100): ",
            _parse_progress,
            "progress",
            "a whole number from 0 to 100",
        )
        return int(value)  # type: ignore[call-overload]

    def preference(self, a_result: EpisodeResult, b_result: EpisodeResult) -> tuple[str, str, bool]:
        choice = self._ask(
            "Which policy did better? [A/B/tie]: ", _parse_choice, "choice", "answer A, B or tie"
        )
        reason = self._ask("Why? (free text): ", _parse_reason, "reason", "the reason must not be empty")
        valid = self._ask("Is this session valid? [y/n]: ", _parse_yes_no, "validity", "answer y or n")
        return str(choice), str(reason), bool(valid)


def _parse_yes_no(raw: str) -> bool:
    answer = raw.lower()
    if answer in ("y", "yes"):
        return True
    if answer in ("n", "no"):
        return False
    raise ValueError(raw)


def _parse_ready(raw: str) -> str:
    answer = raw.lower()
    if answer == "abort":
        return "abort"
    return "ready" if _parse_yes_no(raw) else "not yet"


def _parse_progress(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 100:
        raise ValueError(raw)
    return value


def _parse_choice(raw: str) -> str:
    for choice in CHOICES:
        if raw.lower() == choice.lower():
            return choice
    raise ValueError(raw)


def _parse_reason(raw: str) -> str:
    if not raw:
        raise ValueError(raw)
    return raw
