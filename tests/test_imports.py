"""The pure layers import only themselves, univrs.errors, attrs, sortedcontainers and the
standard library (sortedcontainers: pure in-memory data structures, no I/O, no clock, no
randomness; the state machine's tables ordered by key, univrs/sm/tables.py)."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "univrs"
PURE = ["raft", "sm"]
ALLOWED_THIRD_PARTY = {"attrs", "sortedcontainers"}
# Imported for the type checker only (under ``if TYPE_CHECKING:``), never at run time:
# mypyc's class marker (univrs/raft/native.py).
TYPE_CHECKING_ONLY = {"mypy_extensions"}
# Standard-library modules that would bring I/O, wall-clock time or global randomness.
FORBIDDEN_STDLIB = {
    "time",
    "socket",
    "asyncio",
    "threading",
    "os",
    "subprocess",
    "select",
    "selectors",
    "datetime",
    "random",
    "secrets",
    "uuid",
    "signal",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
}


def imported_modules(path: pathlib.Path) -> list[str]:
    return imported_modules_of(ast.parse(path.read_text(), filename=str(path)))


def type_checking_imports(path: pathlib.Path) -> set[str]:
    """The modules imported inside an ``if TYPE_CHECKING:`` block."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                names.update(imported_modules_of(stmt))
    return names


def imported_modules_of(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def violations(package: str, root: pathlib.Path = ROOT) -> list[str]:
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        typing_only = type_checking_imports(path)
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in TYPE_CHECKING_ONLY and name in typing_only:
                continue
            if name == "random":
                # Only the type, for an injected RNG, is allowed: `import random` is refused
                # because `random.random()` is the global, seedless generator.
                bad.append(f"{path.name}: import {name}")
            elif top == "univrs":
                if not (name == "univrs.errors" or name.startswith(f"univrs.{package}")):
                    bad.append(f"{path.name}: import {name}")
            elif top in FORBIDDEN_STDLIB:
                bad.append(f"{path.name}: import {name}")
            elif top not in sys.stdlib_module_names and top not in ALLOWED_THIRD_PARTY:
                bad.append(f"{path.name}: import {name}")
    return bad


@pytest.mark.parametrize("package", PURE)
def test_pure_layers_import_nothing_impure(package: str) -> None:
    assert violations(package) == []


def test_the_shared_proposal_rules_are_pure() -> None:
    # univrs/runtime/proposals.py runs in the Trio driver, the API and the simulator.
    path = ROOT / "runtime" / "proposals.py"
    bad = [
        name
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN_STDLIB | {"trio"}
        or (name.startswith("univrs") and name != "univrs.errors")
    ]
    assert bad == []


def test_checker_catches_an_impure_import(tmp_path: pathlib.Path) -> None:
    pkg = tmp_path / "raft"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "import trio\nimport time\nimport random\nfrom univrs.net import x\n"
        "import attrs\nfrom univrs.raft.log import y\nimport univrs.errors\n"
    )
    assert violations("raft", root=tmp_path) == [
        "bad.py: import trio",
        "bad.py: import time",
        "bad.py: import random",
        "bad.py: import univrs.net",
    ]


def test_the_simulator_runs_without_trio() -> None:
    # The simulator executes the same interpreter as the Trio driver: it must stay importable
    # (and deterministic) without an event loop library.
    import subprocess

    code = "import sys, univrs.sim.cli; assert 'trio' not in sys.modules, 'trio imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def placeholders(package: str, root: pathlib.Path = ROOT) -> list[str]:
    """Functions in ``package`` whose body only raises NotImplementedError (after a docstring)."""
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring
            if (
                len(body) == 1
                and isinstance(body[0], ast.Raise)
                and "NotImplementedError" in ast.unparse(body[0])
            ):
                bad.append(f"{path.name}: {node.name}")
    return bad


def test_the_core_has_no_placeholder_methods() -> None:
    # RaftNode's code is one chain of layers (univrs/raft/base.py): a layer calls only down the
    # chain, so every call resolves to its one definition; a stub for a sibling to fill in would
    # hide where a call goes (and mypy could no longer see a missing implementation).
    from univrs.raft import RaftNode

    assert placeholders("raft") == []
    assert all(len(cls.__bases__) == 1 for cls in RaftNode.__mro__[:-1])
    # The simulator's runtime too: one chain of layers from RuntimeBase (sim/base.py) up to
    # Simulation (cluster.py), drawn in sim/runtime.py.
    from univrs.sim.cluster import Simulation

    assert placeholders("sim") == []
    assert all(len(cls.__bases__) == 1 for cls in Simulation.__mro__[:-1])


def test_placeholder_checker_finds_a_stub(tmp_path: pathlib.Path) -> None:
    pkg = tmp_path / "raft"
    pkg.mkdir()
    (pkg / "stub.py").write_text(
        "class A:\n    def f(self):\n        '''doc'''\n        raise NotImplementedError\n"
        "    def g(self):\n        raise NotImplementedError('later')\n"
        "    def h(self):\n        return 1\n"
    )
    assert placeholders("raft", root=tmp_path) == ["stub.py: f", "stub.py: g"]
