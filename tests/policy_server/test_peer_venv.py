"""Peer environments (``policy_server.peer_venv``) asked for by several processes at once, as the suite's
parallel workers do: one builds, the others wait for it and reuse the result."""

from __future__ import annotations

import subprocess
import sys

import pytest

from policy_server.peer_venv import package_index_reachable, venv_python

BUILD = """
import sys
from pathlib import Path
from policy_server.peer_venv import ensure_peer_venv
print(ensure_peer_venv("tiny", root=Path(sys.argv[1]), requirements=["typing_extensions"]))
"""


@pytest.mark.timeout(900)
def test_concurrent_requests_for_one_peer_venv_all_get_it(tmp_path):
    if not package_index_reachable("typing-extensions"):
        pytest.skip("the package index is not reachable")
    builders = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(b.wait(timeout=600), *b.communicate()) for b in builders]
    python = venv_python(tmp_path / "tiny")
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert out.strip() == str(python)
    check = subprocess.run([str(python), "-c", "import typing_extensions"], capture_output=True, timeout=120)
    assert check.returncode == 0, check.stderr
