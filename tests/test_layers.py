"""The upper floors' imports: the command line is one package on top, without cycles; the
shared layers under it (errors, the operations table) import nothing above them.

The graph is read from the source (``ast``: every import, at module level or inside a
function), so a lazy import counts too. Edges are explicit imports: a package's
``__init__`` importing its submodules is not a cycle with them.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "univrs"


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: pathlib.Path, root: pathlib.Path) -> set[str]:
    """The modules ``path`` imports (``from pkg import sub`` names ``pkg.sub`` when that is a
    module of the tree, else ``pkg``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path, root).split(".")
    if path.name != "__init__.py":
        here.pop()  # the package a relative import starts from
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                rel = pathlib.Path(*candidate.split("."))
                sub = root.parent / rel
                if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists():
                    found.add(candidate)
                else:
                    found.add(module)
    return found


def graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of the tree it imports."""
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {
        name: {m for m in imports_of(path, root) if m in modules and m != name}
        for name, path in modules.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: every group of modules that reach one another through imports
    (strongly connected components of more than one module, Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def importers(edges: dict[str, set[str]], target: str) -> set[str]:
    """Modules outside package ``target`` that import it (or one of its modules)."""
    inside = {n for n in edges if in_package(n, target)}
    return {n for n, out in edges.items() if n not in inside and out & inside}


# ---------------------------------------------------------------- the package itself


def test_no_import_cycle_goes_through_the_cli() -> None:
    through = [c for c in cycles(graph()) if any(in_package(m, "univrs.cli") for m in c)]
    assert through == []


def test_nothing_below_the_cli_imports_it() -> None:
    # univrs/__main__.py is the `python -m univrs` entry point: the one module above the CLI.
    assert importers(graph(), "univrs.cli") == {"univrs.__main__"}


# The CLI's shared helpers (not command groups): options and output, views, the session cache.
SHARED_CLI = {"univrs.cli.common", "univrs.cli.views", "univrs.cli.session"}


def test_cli_groups_are_added_by_the_root_only() -> None:
    # No registration by import side effect: a group module never imports the root (nor the
    # package, which is the root), and only the root imports the group modules.
    edges = graph()
    groups = {n for n in edges if n.startswith("univrs.cli.")} - {"univrs.cli.root"}
    for name in groups:
        assert not edges[name] & {"univrs.cli", "univrs.cli.root"}, name
    importing_groups = {n for n, out in edges.items() if out & (groups - SHARED_CLI)}
    assert importing_groups <= {"univrs.cli.root"}


def test_the_tools_sit_on_top() -> None:
    # The local dev cluster runs node processes: the chaos runner, the benchmarks and the
    # command line use it; nothing of the product below them does.
    users = importers(graph(), "univrs.tools")
    assert {u.split(".")[1] for u in users} <= {"chaos", "bench", "cli"}, users


def test_the_shared_layers_import_nothing_above_them() -> None:
    edges = graph()
    assert edges["univrs.errors"] == set()  # a leaf: the core may import it


# The whole package, bottom to top (docs/architecture.md). A module may import its own unit
# (top-level package or module) and units of lower layers only: no upward arrow, and units of
# one layer do not import each other. The CLI is the entry point, so it sits on top of the
# tools it runs (`univrs chaos ...`).
LAYERS: list[tuple[str, ...]] = [
    ("univrs.compiled",),  # the opt-in mypyc build's import switch: univrs/__init__ calls it
    ("univrs", "univrs.errors"),
    ("univrs.raft", "univrs.sm", "univrs.metrics", "univrs.logs"),
    ("univrs.codec",),
    ("univrs.storage", "univrs.net"),
    ("univrs.runtime", "univrs.config"),
    ("univrs.service",),
    ("univrs.client",),
    ("univrs.mcp",),  # the MCP tools over a Cluster: a client (stdio) or the node's API (HTTP)
    ("univrs.api",),
    ("univrs.server",),
    ("univrs.tools", "univrs.sim"),
    ("univrs.chaos",),
    ("univrs.bench",),  # checks a sample of its histories with the chaos checker
    ("univrs.cli",),
    ("univrs.__main__",),
]


def unit_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    level = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    bad = []
    for src, targets in sorted(edges.items()):
        su = unit_of(src)
        if su not in level:
            bad.append(f"{src}: its unit {su} has no layer")
            continue
        for dst in sorted(targets):
            du = unit_of(dst)
            if du == su:
                continue
            if du not in level or level[du] >= level[su]:
                bad.append(f"{src} -> {dst}")
    return bad


def test_every_import_points_down() -> None:
    assert layer_violations(graph()) == []


def test_no_import_cycle_anywhere() -> None:
    assert cycles(graph()) == []


# ---------------------------------------------------------------- the checks can fail


def _tree(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    root = tmp_path / "univrs"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_in_the_cli_is_caught(tmp_path: pathlib.Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "cli/__init__.py": "from univrs.cli.root import main\n",
            "cli/root.py": "from univrs.cli import cluster, state\n",
            "cli/common.py": "import click\n",
            "cli/cluster.py": "from univrs.cli.common import x\n",
            # state registers itself on the root's group: root -> state -> root
            "cli/state.py": "def f():\n    from univrs.cli.root import main\n",
        },
    )
    assert cycles(graph(root)) == [["univrs.cli.root", "univrs.cli.state"]]


def test_an_upward_import_of_the_cli_is_caught(tmp_path: pathlib.Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "__main__.py": "from univrs.cli import main\n",
            "cli/__init__.py": "",
            "cli/common.py": "",
            "api/__init__.py": "",
            "api/rest.py": "from univrs.cli.common import format_table\n",
            "chaos/__init__.py": "",
            "chaos/report.py": "from univrs.cli import common\n",
        },
    )
    assert importers(graph(root), "univrs.cli") == {
        "univrs.__main__",
        "univrs.api.rest",
        "univrs.chaos.report",
    }


def test_an_upward_or_sideways_import_is_caught(tmp_path: pathlib.Path) -> None:
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "raft/__init__.py": "",
            "raft/node.py": "from univrs.errors import X\n",
            "runtime/__init__.py": "",
            "runtime/driver.py": "from univrs.raft.node import RaftNode\n",
            # the runtime starting the API server: an upward arrow
            "runtime/node.py": "def f():\n    from univrs.api.server import serve\n",
            "api/__init__.py": "",
            "api/server.py": "from univrs.runtime.driver import RaftRuntime\n",
            # storage and net share a layer: neither imports the other
            "storage/__init__.py": "from univrs.net import x\n",
            "net/__init__.py": "",
        },
    )
    assert layer_violations(graph(root)) == [
        "univrs.runtime.node -> univrs.api.server",
        "univrs.storage -> univrs.net",
    ]
