"""Put the DROID stand-in (``tests/client/fake_droid``) on ``sys.path`` for one test.

DROID drives a Franka through a NUC and ZED cameras, none of which exist here; the stand-in has DROID's
module layout and ``RobotEnv``'s interface, and records every env built and every action stepped. It is the
robot boundary: the adapter, the runner and the CLI above it are the real ones.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

FAKE_DROID = Path(__file__).resolve().parent / "fake_droid"


def _forget_droid() -> None:
    for name in [n for n in sys.modules if n == "droid" or n.startswith("droid.")]:
        del sys.modules[name]


def use_droid_stand_in(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> ModuleType:
    """Make ``import droid`` find the stand-in until the test ends; returns its ``droid.robot_env``."""
    _forget_droid()
    monkeypatch.syspath_prepend(str(FAKE_DROID))
    request.addfinalizer(_forget_droid)
    import droid.robot_env

    return droid.robot_env
