"""An install on LMDB replaces the state env by renames (``StateEnv.replace`` -> ``_swap``,
``univrs.storage.sm_tables.recover_swap``): a process killed at every step of it leaves, at
the next open, a complete environment, the old or the new one, and no leftovers."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from tests.sm.helpers import Log, spec
from tests.sm.test_sm_snapshot import populated
from univrs.runtime.snapshots import capture
from univrs.sm import ClusterStateMachine, CreateWorkload, state_digest
from univrs.storage import sm_tables
from univrs.storage.sm_tables import StateEnv

MAP = 1 << 26

# The child: an env holding one workload ("old"), the populated state staged beside it, then
# ``replace``, killed (``os._exit``: no cleanup, no flush) just before step STEP.
CHILD = textwrap.dedent(
    """
    import os, sys
    from tests.sm.helpers import Log, spec
    from tests.sm.test_sm_snapshot import populated
    from univrs.runtime.snapshots import capture
    from univrs.sm import ClusterStateMachine, CreateWorkload
    from univrs.storage import sm_tables
    from univrs.storage.sm_tables import StateEnv

    folder, step = sys.argv[1], sys.argv[2]
    env = StateEnv(os.path.join(folder, "state.lmdb"), map_size=1 << 26)
    env.set_cluster_id("c1")
    old = Log(ClusterStateMachine())
    old(CreateWorkload(id="old", spec=spec("old")))
    env.replace(old.sm)
    env.sync()
    staged = env.stage(capture(populated().sm)())

    def kill(name):
        if name == step:
            os._exit(9)

    sm_tables.swap_step = kill
    env.replace(staged)
    os._exit(0)
    """
)

STEPS = ["ready", "retire", "install", "sync", "remove", "none"]
# What a restart finds: the old state until the staged env is in place of it.
EXPECTED = {"ready": "old", "retire": "old", "install": "new", "sync": "new", "remove": "new"}
EXPECTED["none"] = "new"


def _digests() -> dict[str, str]:
    old = Log(ClusterStateMachine())
    old(CreateWorkload(id="old", spec=spec("old")))
    return {"old": state_digest(old.sm), "new": state_digest(populated().sm)}


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_every_step_of_the_swap_leaves_one_complete_env(
    tmp_path: pathlib.Path, step: str
) -> None:
    root = pathlib.Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), step],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == (0 if step == "none" else 9), done.stderr.decode()[-2000:]
    env = StateEnv(str(tmp_path / "state.lmdb"), map_size=MAP)
    try:
        assert state_digest(env.load()) == _digests()[EXPECTED[step]]
        assert env.cluster_id() == "c1"  # the staged env carries the stamp
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.lmdb"]  # no leftovers
        if step in ("install",):
            assert env.recovered is not None and "replaced" in env.recovered
    finally:
        env.close()


def test_readers_of_the_old_env_finish_after_the_swap(tmp_path: pathlib.Path) -> None:
    """A snapshot being encoded from the old env (its raw views: read transactions) when the
    swap happens reads the old state to its end; the env then serves the new state."""
    env = StateEnv(str(tmp_path / "state.lmdb"), map_size=MAP)
    old = Log(ClusterStateMachine())
    old(CreateWorkload(id="old", spec=spec("old")))
    current = env.replace(old.sm)
    encode = capture(current)  # read transactions on the old env, begun now
    staged = env.stage(capture(populated().sm)())
    new = env.replace(staged)
    assert new is staged
    assert state_digest(env.load()) == state_digest(populated().sm)
    from univrs.runtime.snapshots import restore

    assert state_digest(restore(encode())) == state_digest(old.sm)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.lmdb"]
    env.close()


def test_the_swap_copies_nothing(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails on the code before (244ce50): its install copied every staged row into the
    env in one write transaction on the event loop (``putmulti``), O(state)."""
    env = StateEnv(str(tmp_path / "state.lmdb"), map_size=MAP)
    staged = env.stage(capture(populated().sm)())
    writes: list[str] = []
    real = sm_tables.LmdbStore.batch

    def batch(self: sm_tables.LmdbStore) -> object:
        writes.append("batch")
        return real(self)

    monkeypatch.setattr(sm_tables.LmdbStore, "batch", batch)
    env.replace(staged)
    assert writes == []
    env.close()
