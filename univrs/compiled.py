"""Opt-in: run the modules that ``scripts/compile`` compiled with mypyc (docs/performance.md,
"Round 20 (s20-mypyc)").

``scripts/compile`` builds C extensions of some pure modules (the Raft core, ...) into
``build/mypyc/`` (never next to the sources: a ``.so`` beside its ``.py`` would shadow it, and
an edit to the ``.py`` would silently not run) and writes ``manifest.json`` there: for each
compiled module, its extension file and the SHA-256 of the source it was compiled from.

Nothing here runs unless the environment asks for it: ``UNIVRS_COMPILED=1`` (the default
build directory) or ``UNIVRS_COMPILED=/path/to/build`` (``univrs/__init__.py`` calls
``install``; child processes inherit the variable, so a benchmark's nodes run compiled too).
Tests, CI and ``univrs node start`` run the interpreted sources. ``install`` then puts an
import finder first on ``sys.meta_path`` that loads exactly the manifest's modules from their
extension files, and refuses (``StaleBuild``) when any compiled module's source changed since
the build, when the build is missing, or when it was built for another Python.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

ENV = "UNIVRS_COMPILED"
MANIFEST = "manifest.json"
ROOT = Path(__file__).resolve().parent.parent  # the checkout: univrs/ and build/ are in it
DEFAULT_DIR = ROOT / "build" / "mypyc"


class StaleBuild(RuntimeError):
    """The compiled build cannot stand for the current sources: rebuild or unset the switch."""


def requested(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path | None:
    """The build directory the environment asks for (None: run interpreted, the default)."""
    value = environ.get(ENV, "")
    if value in ("", "0"):
        return None
    return DEFAULT_DIR if value == "1" else Path(value)


def source_hash(path: Path) -> str:
    """The SHA-256 of a source file, as the manifest records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(build: Path, root: Path = ROOT) -> dict[str, Path]:
    """The extension file of every module of ``build``'s manifest, by module name; raises
    ``StaleBuild`` if the manifest is missing, was built for another interpreter, or any
    compiled module's source (under ``root``) differs from the one it was compiled from."""
    try:
        manifest = json.loads((build / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise StaleBuild(f"{ENV}: no usable build in {build} ({e}); run scripts/compile") from e
    if manifest.get("cache_tag") != sys.implementation.cache_tag:
        raise StaleBuild(
            f"{ENV}: {build} was built for {manifest.get('cache_tag')}, this is "
            f"{sys.implementation.cache_tag}; run scripts/compile"
        )
    changed = []
    files: dict[str, Path] = {}
    for name, entry in sorted(manifest["modules"].items()):
        source = entry.get("source")
        if source is not None:
            path = root / source
            if not path.is_file() or source_hash(path) != entry["sha256"]:
                changed.append(source)
        files[name] = build / entry["extension"]
        if not files[name].is_file():
            changed.append(entry["extension"])
    if changed:
        raise StaleBuild(
            f"{ENV}: changed since scripts/compile built {build}: {', '.join(changed)}; "
            "run scripts/compile again (or unset UNIVRS_COMPILED to run the sources)"
        )
    return files


class CompiledFinder:
    """Finds the manifest's modules in their extension files; every other module as before."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        so = self.files.get(fullname)
        if so is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(so))
        return importlib.util.spec_from_file_location(fullname, so, loader=loader)


def install(build: Path) -> CompiledFinder:
    """Checks ``build`` and puts its finder first on ``sys.meta_path`` (once)."""
    for finder in sys.meta_path:
        if isinstance(finder, CompiledFinder):
            return finder
    files = check(build)
    loaded = sorted(name for name in files if name in sys.modules)
    if loaded:
        raise StaleBuild(f"{ENV}: already imported interpreted: {', '.join(loaded)}")
    finder = CompiledFinder(files)
    sys.meta_path.insert(0, finder)
    return finder


def active() -> bool:
    """Whether this process runs the compiled build (for a benchmark's report)."""
    return any(isinstance(f, CompiledFinder) for f in sys.meta_path)
