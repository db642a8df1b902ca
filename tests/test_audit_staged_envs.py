"""s13-audit: a leader's snapshot staged into an environment of its own while it is checked
(``StateEnv.stage``, ``SnapshotChecker(into=...)``) and then not installed leaves no
environment behind.

Before: the staged environment (a whole copy of the state: GBs at 1M objects, and an open
LMDB environment with its map) stayed open and on disk until a later staged snapshot was
installed or the node restarted, for every check the core did not take: superseded during
the check (checking.py ``discard``: the follower caught up by the log, a new term), a check
whose state was at another index than its metadata said, a check replaced by another one. A
leader that keeps being replaced while a large follower is checked filled the disk."""

from __future__ import annotations

import pathlib

import attrs

from tests.runtime.test_snapshot_stream import _env_with_old_state, _leftovers, _meta
from tests.sm.test_sm_snapshot import populated
from univrs.runtime.snapshots import SnapshotChecker, capture
from univrs.sm import state_digest


def test_a_discarded_check_leaves_no_staged_environment(tmp_path: pathlib.Path) -> None:
    log = populated()
    data, meta = capture(log.sm)(), _meta(log.sm)
    env, old = _env_with_old_state(tmp_path)
    check = SnapshotChecker(into=env.stage, unstage=env.unstage)
    check.precheck(meta, data)  # the worker thread
    assert len(_leftovers(tmp_path)) == 1
    check.discard(meta)  # superseded meanwhile: the core did not take it
    assert _leftovers(tmp_path) == []
    assert state_digest(env.load()) == old
    env.close()


def test_a_check_at_the_wrong_index_or_replaced_leaves_no_staged_environment(
    tmp_path: pathlib.Path,
) -> None:
    log = populated()
    data, meta = capture(log.sm)(), _meta(log.sm)
    env, old = _env_with_old_state(tmp_path)
    check = SnapshotChecker(into=env.stage, unstage=env.unstage)
    wrong = attrs.evolve(meta, index=meta.index + 5)
    check.precheck(wrong, data)  # restores, but not at the index its metadata says
    assert check.found(wrong, data) is not None
    assert _leftovers(tmp_path) == []
    check.precheck(meta, data)
    check.precheck(meta, data)  # checked again (another stream of it): the first one goes
    assert len(_leftovers(tmp_path)) == 1
    assert check(wrong, data) is not None  # the core checks another one: the ahead goes
    assert _leftovers(tmp_path) == []
    assert check(meta, data) is None
    assert check(meta, data) is None  # checked twice, taken once
    assert len(_leftovers(tmp_path)) == 1
    checked = check.take(meta, data)
    assert checked is not None
    env.replace(checked)
    assert _leftovers(tmp_path) == []
    assert state_digest(env.load()) == state_digest(log.sm) != old
    env.close()
