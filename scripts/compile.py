"""Compile univrs's pure, strict-typed hot modules with mypyc into build/mypyc (opt-in).

The extensions go to ``build/mypyc/`` (``--out``), never next to the sources (a ``.so`` beside
its ``.py`` shadows it). ``manifest.json`` there records, for each compiled module, its
extension file and its source's SHA-256; ``UNIVRS_COMPILED=1`` runs them (univrs/compiled.py
refuses a build whose sources changed since). docs/performance.md, "Round 20 (s20-mypyc)".

    scripts/compile [--set raft|raft+sm|...] [--out build/mypyc] [--list]

mypyc ships with the pinned mypy (the test extra); a C compiler and Python.h are needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from univrs.compiled import MANIFEST, source_hash  # noqa: E402

# Modules that compile and behave the same compiled (docs/performance.md lists what does not
# and why). Package __init__ modules stay interpreted: a compiled one would need its __path__
# set up by the finder.


# native.py's run-time ``mypyc_attr`` is the ``else`` of ``if TYPE_CHECKING``, which mypyc
# compiles as unreachable code (it raises when run): it stays interpreted.
# sm/tables.py's abstract tables are subclassed by the storage layer's LMDB tables (interpreted):
# compiled, they would be native classes that "interpreted classes cannot inherit from".
INTERPRETED = {"univrs/raft/native.py", "univrs/sm/tables.py"}


def _modules(package: str) -> list[str]:
    """The package's modules that mypyc can compile as they are: not those whose attrs classes
    declare ``attrs.field(...)`` defaults (mypyc checks a class body's annotated value against
    its annotation, and an ``attrs.field`` is no ``int`` or ``list``: TypeError at import)."""
    out = []
    for path in sorted((ROOT / package).glob("[!_]*.py")):
        if str(path.relative_to(ROOT)) in INTERPRETED:
            continue
        if "attrs.field(" not in path.read_text():
            out.append(str(path.relative_to(ROOT)))
    return out


SETS: dict[str, list[str]] = {"raft": _modules("univrs/raft")}
SETS["raft+sm"] = SETS["raft"] + _modules("univrs/sm")


def build(sources: list[str], out: Path, opt_level: str) -> dict[str, object]:
    """Runs mypyc over ``sources`` (paths relative to ROOT) and returns the manifest."""
    from mypyc.build import mypycify
    from setuptools import setup

    tmp = out / "tmp"
    lib = out / "lib"
    shutil.rmtree(out, ignore_errors=True)
    argv = sys.argv
    sys.argv = [argv[0], "build_ext", "--build-lib", str(lib), "--build-temp", str(tmp / "o")]
    try:
        # The project's mypy config warns on sections mypyc's run does not use: not an error.
        modules = mypycify(
            ["--no-warn-unused-configs", *sources],
            opt_level=opt_level,
            target_dir=str(tmp / "c"),
        )
        setup(name="univrs-mypyc", ext_modules=modules, script_args=sys.argv[1:])
    finally:
        sys.argv = argv
    entries: dict[str, dict[str, str | None]] = {}
    for so in sorted(lib.rglob("*.so")):
        rel = so.relative_to(lib)
        name = ".".join([*rel.parent.parts, rel.name.split(".")[0]])
        source = rel.parent / (rel.name.split(".")[0] + ".py")
        if (ROOT / source).is_file():
            entries[name] = {
                "extension": str(so.relative_to(out)),
                "source": str(source),
                "sha256": source_hash(ROOT / source),
            }
        else:  # mypyc's shared runtime library of this build (a top-level module)
            entries[name] = {"extension": str(so.relative_to(out)), "source": None}
    missing = {s for s in sources} - {e["source"] for e in entries.values()}
    if missing:
        raise SystemExit(f"compile: no extension built for {sorted(missing)}")
    shutil.rmtree(tmp, ignore_errors=True)
    return {"cache_tag": sys.implementation.cache_tag, "sources": sources, "modules": entries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="raft", choices=sorted(SETS))
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mypyc")
    parser.add_argument("--opt-level", default="3")
    parser.add_argument("--list", action="store_true", help="print the set's modules and stop")
    args = parser.parse_args()
    sources = SETS[args.set]
    if args.list:
        print("\n".join(sources))
        return
    manifest = build(sources, args.out.resolve(), args.opt_level)
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"compiled {len(sources)} modules into {args.out} (UNIVRS_COMPILED=1 to run them)")


if __name__ == "__main__":
    main()
