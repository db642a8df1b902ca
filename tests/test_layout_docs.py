"""The README's layout table and docs/architecture.md match the tree.

Every path the table names exists, every unit of the package (a subpackage or a top-level
module) is in the table, and architecture.md has a paragraph naming each unit's path.
"""

from __future__ import annotations

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = REPO / "univrs"
NOT_UNITS = {"__init__.py", "__main__.py"}  # the package itself; `python -m univrs`


def units(package: pathlib.Path = PACKAGE) -> set[str]:
    """``univrs/x/`` for each subpackage and ``univrs/x.py`` for each top-level module."""
    found = set()
    for p in package.iterdir():
        if p.is_dir() and (p / "__init__.py").exists():
            found.add(f"univrs/{p.name}/")
        elif p.suffix == ".py" and p.name not in NOT_UNITS:
            found.add(f"univrs/{p.name}")
    return found


def layout_paths(readme: str) -> set[str]:
    """The code-quoted paths in the first column of the README's layout table."""
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {path for row in rows for path in re.findall(r"`([^`]+)`", row.split(" | ")[0])}


def test_readme_layout_table_matches_the_tree() -> None:
    paths = layout_paths((REPO / "README.md").read_text())
    assert sorted(p for p in paths if not (REPO / p).exists()) == []
    assert sorted(units() - paths) == []


def test_architecture_doc_describes_every_unit() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    missing = [u for u in sorted(units()) if f"`{u.rstrip('/')}" not in doc]
    assert missing == []


def test_the_layout_checks_see_a_missing_row(tmp_path: pathlib.Path) -> None:
    pkg = tmp_path / "univrs"
    (pkg / "newpart").mkdir(parents=True)
    (pkg / "newpart" / "__init__.py").write_text("")
    (pkg / "codec.py").write_text("")
    (pkg / "__main__.py").write_text("")
    assert units(pkg) == {"univrs/newpart/", "univrs/codec.py"}
    readme = "# x\n## Layout\n| path | what |\n| `univrs/codec.py`, `gone/` | codec |\n## Next\n"
    assert layout_paths(readme) == {"univrs/codec.py", "gone/"}
