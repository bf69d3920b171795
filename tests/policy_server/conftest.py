"""Fixtures for the policy_server tests: test policies, free ports, and the openpi peer environments."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from policy_server.peer_venv import PeerVenvError, ensure_peer_venv, package_index_reachable

HERE = Path(__file__).parent


def _register_helper(name: str) -> ModuleType:
    """Test modules are imported with importlib (no sys.path change), so helpers are registered by path:
    ``import <name>`` then works in every test module of this folder."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


arena_test_policies = _register_helper("arena_test_policies")
_register_helper("roboarena_dialect")


@pytest.fixture
def echo_policy():
    return arena_test_policies.EchoPolicy()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pypi_peer: needs a reference peer (openpi-client/openpi-server) installed from PyPI into var/venvs; "
        "skipped only when PyPI is unreachable outside CI, a failure when $CI is set",
    )


def _peer_python(name: str) -> Path:
    try:
        return ensure_peer_venv(name)
    except PeerVenvError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"building the {name} peer environment failed in CI: {exc}")
        if not package_index_reachable():
            pytest.skip(f"PyPI is unreachable, so the {name} peer environment cannot be built")
        raise


@pytest.fixture(scope="session")
def openpi_client_python() -> Path:
    """Interpreter of var/venvs/openpi-client (openpi-client 0.1.2, numpy<2), built on first use."""
    return _peer_python("openpi-client")


@pytest.fixture(scope="session")
def openpi_server_python() -> Path:
    """Interpreter of var/venvs/openpi-server (openpi-server 0.1.0), built on first use."""
    return _peer_python("openpi-server")
