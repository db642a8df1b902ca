"""A durable write that fails on a full disk says so (univrs/storage/nospace.py).

The session-15 review (docs/security.md, s15-review) filled a 40 MB tmpfs under a node: it
stopped with LMDB's ``mdb_txn_commit: Input/output error`` and nothing said the disk was full.
Now the error names the file, says "no space left on device" (or "probably", for an EIO on a
filesystem with less than ``LOW_FREE_BYTES`` free), gives the free bytes and what to do; the
node still stops, and nothing of the failed write was acknowledged or stored. The failures
are simulated (an LMDB commit or an ``os.write`` that raises, ``os.statvfs`` reporting little
room); a real tmpfs is filled too when the test may mount one (root).
"""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
from typing import Any

import lmdb
import pytest
import trio

from univrs.errors import StorageError
from univrs.raft.messages import AppendEntriesResponse, HardState
from univrs.runtime.writer import PersistJob, StorageWriter
from univrs.storage import LogStore, layout, nospace
from univrs.storage.nospace import LOW_FREE_BYTES, DiskFull
from univrs.storage.sm_tables import StateEnv

from .helpers import Opener, at, make_entries, store_with_snapshot

EIO_COMMIT = "mdb_txn_commit: Input/output error"
FREE = 1_234_567  # what the simulated filesystem has left


class _Statvfs:
    def __init__(self, free: int) -> None:
        self.f_bavail, self.f_frsize = free // 4096, 4096


def little_room(monkeypatch: pytest.MonkeyPatch, free: int = FREE) -> int:
    """``os.statvfs`` reports ``free`` bytes (rounded down to 4 KiB blocks) everywhere."""
    monkeypatch.setattr(os, "statvfs", lambda _path: _Statvfs(free))
    return free // 4096 * 4096


class _FailingTxn:
    """A real write transaction whose commit aborts it and raises ``error``."""

    def __init__(self, txn: Any, error: BaseException) -> None:
        self._txn, self._error = txn, error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    def commit(self) -> None:
        self._txn.abort()
        raise self._error


class _FailingEnv:
    """An LMDB environment whose write transactions fail to commit with ``error``."""

    def __init__(self, env: Any, error: BaseException) -> None:
        self._env, self._error = env, error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        txn = self._env.begin(*args, **kwargs)
        return _FailingTxn(txn, self._error) if kwargs.get("write") else txn


def failing_commits(monkeypatch: pytest.MonkeyPatch, store: LogStore, error: BaseException) -> None:
    env = store._env
    monkeypatch.setattr(env, "_env", _FailingEnv(env._env, error))


def assert_says_disk_full(
    exc: BaseException, path: pathlib.Path, free: int, probably: bool
) -> None:
    text = str(exc)
    assert isinstance(exc, DiskFull), text
    assert str(path) in text
    assert ("probably no space left on device" in text) is probably, text
    assert "no space left on device" in text
    assert f"{free} bytes free" in text
    assert "free space or grow the volume, then start the node again" in text
    assert "nothing acknowledged was lost" in text
    assert (exc.path, exc.free, exc.probably) == (path, free, probably)


@pytest.mark.parametrize(
    ("error", "probably"),
    [
        (lmdb.Error(EIO_COMMIT), True),
        (lmdb.Error("mdb_txn_commit: No space left on device"), False),
    ],
)
def test_a_log_append_on_a_full_disk_says_so_and_stores_nothing(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch, error: BaseException, probably: bool
) -> None:
    store = open_store()
    store.append(hard_state=HardState(term=1), truncate_from=None, entries=make_entries(1, 3))
    free = little_room(monkeypatch)
    failing_commits(monkeypatch, store, error)
    with pytest.raises(StorageError) as raised:
        store.append(hard_state=HardState(term=2), truncate_from=None, entries=make_entries(4, 6))
    assert_says_disk_full(raised.value, store.path / "data.mdb", free, probably)
    monkeypatch.undo()
    assert (store.last_index(), store.hard_state().term) == (3, 1)


def test_an_io_error_on_a_disk_with_room_is_not_called_a_full_disk(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing disk is not a full one: with room left, the EIO is reported as it is."""
    store = open_store()
    little_room(monkeypatch, LOW_FREE_BYTES + (1 << 20))
    failing_commits(monkeypatch, store, lmdb.Error(EIO_COMMIT))
    with pytest.raises(StorageError, match="Input/output error") as raised:
        store.append(hard_state=HardState(term=2), truncate_from=None, entries=make_entries(1, 2))
    assert not isinstance(raised.value, DiskFull)
    assert "no space" not in str(raised.value)


def test_a_full_map_keeps_its_own_message(tmp_path: pathlib.Path) -> None:
    """LMDB's map full (the memory map at its maximum size) is not the disk: said apart."""
    assert nospace.disk_full(tmp_path, lmdb.MapFullError("mdb_put: MDB_MAP_FULL")) is None
    store = LogStore.open(tmp_path / "d", node_id="n1", map_size=1 << 20, max_map_size=1 << 20)
    try:
        with pytest.raises(StorageError, match="LMDB map is full at its maximum size") as raised:
            store.append(
                hard_state=None, truncate_from=None, entries=make_entries(1, 400, size=4000)
            )
        assert "no space" not in str(raised.value)
    finally:
        store.close()


def test_a_snapshot_file_on_a_full_disk_says_so(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's own snapshot, saved in parts to its file (snapshot_file.py)."""
    store = store_with_snapshot(open_store, os.urandom(30_000), 12, entries=40)
    saving = store.snapshot_parts(at(30), os.urandom(100_000), part_blocks=3)
    free = little_room(monkeypatch)
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".dat"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(StorageError) as raised:
        while not saving.step():
            pass
    exc = raised.value
    assert isinstance(exc, DiskFull)
    assert exc.path.parent == store.path and exc.path.name.startswith(layout.SNAPSHOT_FILE_PREFIX)
    assert_says_disk_full(exc, exc.path, free, probably=False)


def test_a_state_batch_on_a_full_disk_says_so(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateEnv(str(tmp_path / "state.lmdb"))
    try:
        free = little_room(monkeypatch)
        store = state.store
        monkeypatch.setattr(store, "env", _FailingEnv(store.env, lmdb.Error(EIO_COMMIT)))
        with pytest.raises(DiskFull) as raised, store.batch():
            store.db("meta")
        assert_says_disk_full(raised.value, tmp_path / "state.lmdb" / "data.mdb", free, True)
    finally:
        monkeypatch.undo()
        state.close()


async def test_the_writer_stops_on_a_full_disk_and_acknowledges_nothing(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread's append fails on a full disk: the node's writer stops with the
    message, and the acknowledgement that waited on the fsync is never sent."""
    store = open_store()
    sent: list[object] = []
    free = little_room(monkeypatch)
    failing_commits(monkeypatch, store, lmdb.Error(EIO_COMMIT))
    writer = StorageWriter(
        write=store.append,
        send=sent.append,
        on_persisted=lambda index, _term, _hs: sent.append(index),
        in_thread=True,
    )
    ack = AppendEntriesResponse(term=2, src="b", dst="a", success=True, index=3)
    job = PersistJob(
        hard_state=HardState(term=2, vote="a"),
        truncate_from=None,
        entries=tuple(make_entries(1, 3, term=2)),
        after_persist=(ack,),
    )
    with pytest.raises(ExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            writer.submit(job)
    assert raised.group_contains(DiskFull, match="probably no space left on device")
    full = raised.value.exceptions[0]
    assert_says_disk_full(full, store.path / "data.mdb", free, probably=True)
    assert sent == []
    monkeypatch.undo()
    assert (store.last_index(), store.hard_state().term) == (0, 0)


def _mount_tmpfs(where: pathlib.Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):  # no mount(8), or it hung
        return False
    return done.returncode == 0


def test_a_real_full_tmpfs_says_no_space(tmp_path: pathlib.Path) -> None:
    """A 4 MiB tmpfs filled by appends: the failed append says the disk is full (root only)."""
    where = tmp_path / "small"
    where.mkdir()
    if not _mount_tmpfs(where, "4m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        store = LogStore.open(where / "d", node_id="n1")
        try:
            last = 0
            with pytest.raises(StorageError) as raised:
                for _ in range(200):
                    entries = make_entries(last + 1, last + 20, size=16_000)
                    store.append(hard_state=None, truncate_from=None, entries=entries)
                    last += 20
            exc = raised.value
            assert isinstance(exc, DiskFull), str(exc)
            assert "no space left on device" in str(exc)
            assert store.last_index() == last  # what was appended before stays; no more
        finally:
            store.close()
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_the_node_exits_with_one_error_line_saying_the_disk_is_full(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``univrs node start`` on a full disk: one ERROR line (the file, the free bytes, what to
    do) and the same words as its exit message, exit 1."""
    import logging

    from click.testing import CliRunner

    import univrs.server.node
    from univrs.cli import main

    path = tmp_path / "raft.lmdb" / "data.mdb"
    full = nospace.disk_full(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert full is not None

    async def run_node(*_args: object, **_kwargs: object) -> None:
        await trio.lowlevel.checkpoint()
        raise full

    monkeypatch.setattr(univrs.server.node, "run_node", run_node)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(main, ["node", "start", "--data-dir", str(tmp_path)])
    finally:
        root.handlers[:], root.level = handlers, level
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if " error univrs.cli " in line]
    assert len(errors) == 1, result.stderr
    assert "stopping: disk full" in errors[0] and str(path) in errors[0]
    assert f"free_bytes={full.free}" in errors[0]
    assert f"error: {full}" in result.stderr
    assert "no space left on device" in str(full) and "start the node again" in str(full)
