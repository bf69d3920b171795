"""Build the distribution and install it in a fresh virtual environment, as a lab or a policy owner would."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "robot-policy-arena"


def run(command: list, *, timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``command`` outside this test run's environment (no PYTHONPATH, venv or Django settings)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE")
    }
    return subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def build_wheel(outdir: Path) -> Path:
    """``python -m build`` (the sdist, then the wheel from it); returns the wheel. One build at a time per
    checkout (the suite's parallel workers may both build): ``build`` writes its egg-info into the checkout."""
    lock = ROOT / "build" / ".arena-test-build.lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        ok(run([sys.executable, "-m", "build", "--outdir", outdir, ROOT], timeout=600))
    wheels = sorted(outdir.glob("robot_policy_arena-*.whl"))
    assert len(wheels) == 1, sorted(p.name for p in outdir.iterdir())
    return wheels[0]


def fresh_venv(path: Path, requirement: str) -> Path:
    """A new virtual environment at ``path`` with ``requirement`` installed from the package index; returns its
    ``bin`` folder."""
    ok(run([sys.executable, "-m", "venv", path], timeout=300))
    ok(run([path / "bin" / "python", "-m", "pip", "install", "--quiet", requirement], timeout=900))
    return path / "bin"
