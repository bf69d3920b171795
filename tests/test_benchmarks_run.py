"""The relay benchmarks still run end to end against the current relay and decoder (they start real servers and
a real relay; a change to the relay's rules or flags that breaks them should fail here, not months later). Their
timings are printed, never asserted: timing targets live in the benchmarks themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("module", "expect"),
    [
        ("benchmarks.protocol", "PolicyClient -> relay -> server"),
        ("benchmarks.dialout", "PolicyClient -> relay 2 -> relay 1 -> link"),
        ("benchmarks.hostile_frames", "slowest rejection"),
    ],
)
def test_relay_benchmark_runs(module: str, expect: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_ALLOW_ASYNC_UNSAFE")}
    result = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert expect in result.stdout
    assert "bad_observation" not in result.stdout and "address_not_allowed" not in result.stdout


def test_release_benchmark_runs() -> None:
    """``benchmarks.release_build --quick`` still fills an arena, builds its release and prints the table."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_ALLOW_ASYNC_UNSAFE", "DATABASE_URL"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.release_build", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()[:2].strip().isdigit()]
    assert [int(row[0]) for row in rows] == [10, 50]  # sessions released, as asked
    assert all(int(row[1]) == 2 * int(row[0]) for row in rows)  # two episodes each
