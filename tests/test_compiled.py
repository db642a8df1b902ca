"""The opt-in mypyc build (univrs/compiled.py, scripts/compile; docs/performance.md, "Round 20
(s20-mypyc)"): off unless asked for, a build whose sources changed is refused (a compiled
module would shadow the edited ``.py``), and the compiled core runs the simulator's seeds as
the interpreted one does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from univrs import compiled
from univrs.compiled import MANIFEST, StaleBuild, check, requested, source_hash

ROOT = Path(__file__).resolve().parent.parent


def _build(tmp_path: Path, sources: dict[str, str]) -> tuple[Path, Path]:
    """A checkout under ``tmp_path/src`` with ``sources`` and a build of them (fake
    extension files: only the manifest's bookkeeping is under test)."""
    root, build = tmp_path / "src", tmp_path / "build"
    modules: dict[str, object] = {}
    for rel, text in sources.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        name = rel.removesuffix(".py").replace("/", ".")
        ext = f"lib/{rel.removesuffix('.py')}.so"
        (build / ext).parent.mkdir(parents=True, exist_ok=True)
        (build / ext).write_bytes(b"")
        modules[name] = {"extension": ext, "source": rel, "sha256": source_hash(root / rel)}
    manifest = {"cache_tag": sys.implementation.cache_tag, "modules": modules}
    (build / MANIFEST).write_text(json.dumps(manifest))
    return root, build


def test_off_unless_the_environment_asks() -> None:
    assert requested({}) is None
    assert requested({"UNIVRS_COMPILED": ""}) is None
    assert requested({"UNIVRS_COMPILED": "0"}) is None
    assert requested({"UNIVRS_COMPILED": "1"}) == compiled.DEFAULT_DIR
    assert requested({"UNIVRS_COMPILED": "/x/y"}) == Path("/x/y")
    # This test process runs the sources (tests, CI: UNIVRS_COMPILED unset).
    assert not compiled.active() or os.environ.get("UNIVRS_COMPILED")


def test_a_fresh_build_is_taken(tmp_path: Path) -> None:
    root, build = _build(tmp_path, {"univrs/raft/log.py": "X = 1\n"})
    assert check(build, root) == {"univrs.raft.log": build / "lib/univrs/raft/log.so"}


def test_an_edited_source_refuses_the_build(tmp_path: Path) -> None:
    root, build = _build(tmp_path, {"univrs/raft/log.py": "X = 1\n", "univrs/raft/a.py": ""})
    (root / "univrs/raft/log.py").write_text("X = 2\n")
    with pytest.raises(StaleBuild, match=r"changed since scripts/compile.*univrs/raft/log\.py"):
        check(build, root)


def test_a_deleted_source_or_extension_refuses_the_build(tmp_path: Path) -> None:
    root, build = _build(tmp_path, {"univrs/raft/log.py": "X = 1\n"})
    (build / "lib/univrs/raft/log.so").unlink()
    with pytest.raises(StaleBuild, match=r"log\.so"):
        check(build, root)
    root, build = _build(tmp_path / "2", {"univrs/raft/log.py": "X = 1\n"})
    (root / "univrs/raft/log.py").unlink()
    with pytest.raises(StaleBuild, match=r"log\.py"):
        check(build, root)


def test_no_build_or_another_python_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StaleBuild, match="no usable build"):
        check(tmp_path / "nothing", tmp_path)
    root, build = _build(tmp_path, {"univrs/raft/log.py": "X = 1\n"})
    doc = json.loads((build / MANIFEST).read_text())
    (build / MANIFEST).write_text(json.dumps({**doc, "cache_tag": "cpython-399"}))
    with pytest.raises(StaleBuild, match="cpython-399"):
        check(build, root)


def test_a_process_with_a_stale_build_stops_at_import(tmp_path: Path) -> None:
    """The switch is read by ``univrs/__init__``: nothing of the package runs on a stale build."""
    build = tmp_path / "build"
    (build / "lib").mkdir(parents=True)
    (build / "lib/log.so").write_bytes(b"")
    entry = {"extension": "lib/log.so", "source": "univrs/raft/log.py", "sha256": "0" * 64}
    manifest = {"cache_tag": sys.implementation.cache_tag, "modules": {"univrs.raft.log": entry}}
    (build / MANIFEST).write_text(json.dumps(manifest))
    env = {**os.environ, "UNIVRS_COMPILED": str(build)}
    out = subprocess.run(
        [sys.executable, "-c", "import univrs.raft"], env=env, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "StaleBuild" in out.stderr and "univrs/raft/log.py" in out.stderr
    env["UNIVRS_COMPILED"] = "0"
    assert subprocess.run([sys.executable, "-c", "import univrs.raft"], env=env).returncode == 0


def _can_compile() -> str | None:
    """Why mypyc cannot build here (None: it can)."""
    if shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc") is None:
        return "no C compiler"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python.h"
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return "no mypyc (the test extra's mypy ships it)"
    return None


@pytest.mark.slow
def test_the_compiled_core_runs_seeds_as_the_interpreted_one(tmp_path: Path) -> None:
    """Builds the default set (the Raft core) and runs three simulator seeds both ways, and
    the core alone on an in-memory cluster (20 batches): the seeds' statistics (leaders,
    commits, reads, messages) and the nodes' status with the harness's transcript are the
    same."""
    why = _can_compile()
    if why is not None:
        pytest.skip(f"cannot build with mypyc here: {why}")
    build = tmp_path / "mypyc"
    subprocess.run(
        [sys.executable, "scripts/compile.py", "--out", str(build)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    for child in (["--child-sim", "3"], ["--child-core", "20"]):
        digests = {}
        for mode in ("0", str(build)):
            env = {**os.environ, "UNIVRS_COMPILED": mode, "PYTHONHASHSEED": "0"}
            out = subprocess.run(
                [sys.executable, "scripts/bench_compiled.py", *child],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            doc = json.loads(out.stdout.strip().splitlines()[-1])
            assert doc["compiled"] == (mode != "0")
            digests[mode] = doc["digest"]
        assert digests["0"] == digests[str(build)], child
