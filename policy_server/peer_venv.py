"""Isolated virtual environments holding reference peers of the protocol (openpi-client, openpi-server).

Those packages pin numpy<2, so they cannot live in our environment; the compatibility tests and the protocol
benchmark run them in their own venv, built once and reused (``var/venvs/<name>`` in the repository). Several
processes may ask for one at once (the suite's parallel workers): the first builds it under a file lock while
the others wait, then find it ready.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
import venv
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; builds there are not guarded against a concurrent builder
    fcntl = None  # type: ignore[assignment]

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_ROOT = REPO_ROOT / "var" / "venvs"

PEERS: dict[str, tuple[str, ...]] = {
    "openpi-client": ("openpi-client==0.1.2", "typing_extensions"),
    "openpi-server": ("openpi-server==0.1.0", "openpi-client==0.1.2", "typing_extensions"),
}
"""Name of each peer environment -> the requirements installed into it."""

_DEFAULT_INDEX = "https://pypi.org/simple"
_READY_MARKER = "arena-peer-ready.txt"


class PeerVenvError(RuntimeError):
    """A peer environment could not be built; ``output`` holds pip's output."""

    def __init__(self, message: str, *, output: str = "") -> None:
        super().__init__(f"{message}\n{output[-4000:]}" if output else message)
        self.output = output


def venv_python(path: Path) -> Path:
    """The interpreter of the venv at ``path``."""
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_peer_venv(
    name: str, *, root: Path = VENV_ROOT, requirements: Sequence[str] | None = None, timeout_s: float = 900
) -> Path:
    """Return the interpreter of peer environment ``name``, building it first if it is missing or stale.

    A venv counts as built when its marker file lists exactly ``requirements`` (default: ``PEERS[name]``).
    Raises :class:`PeerVenvError` if creating the venv or installing fails.
    """
    wanted = list(requirements if requirements is not None else PEERS[name])
    path = root / name
    python = venv_python(path)
    marker = path / _READY_MARKER

    def ready() -> bool:
        return python.exists() and marker.exists() and marker.read_text().split("\n") == wanted

    if ready():
        return python
    with _build_lock(root / f".{name}.lock"):
        if not ready():  # another process may have built it while this one waited
            _build(path, python, marker, wanted, timeout_s)
    return python


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build(path: Path, python: Path, marker: Path, wanted: list[str], timeout_s: float) -> None:
    venv.EnvBuilder(clear=True, with_pip=True).create(path)
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *wanted]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PeerVenvError(f"installing {wanted} took more than {timeout_s} s") from exc
    if done.returncode != 0:
        raise PeerVenvError(f"pip could not install {wanted} into {path}", output=done.stdout + done.stderr)
    marker.write_text("\n".join(wanted))


def package_index_reachable(package: str = "openpi-client", *, timeout_s: float = 5.0) -> bool:
    """Whether the package index pip uses (``$PIP_INDEX_URL`` or PyPI) answers for ``package``."""
    index = os.environ.get("PIP_INDEX_URL", _DEFAULT_INDEX).rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/{package}/", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main() -> None:
    """``python -m policy_server.peer_venv [NAME ...]``: build the named (default: all) peer environments."""
    for name in sys.argv[1:] or list(PEERS):
        print(f"{name}: {ensure_peer_venv(name)}")


if __name__ == "__main__":
    main()
