"""A leader's snapshot staged on the follower while its chunks stream in (s13-scale:
univrs/runtime/feeding.py, univrs/storage/sm_feed.py): the check of the last chunk takes that
staging instead of staging the joined data after the stream, and the follower ends with the
leader's tables."""

from __future__ import annotations

import logging
import pathlib
import threading
import zlib
from typing import Any, cast

import attrs
import pytest
import trio

from tests.api.helpers import Cluster, wait_until
from tests.runtime.test_state_lmdb import (
    _configs,
    _tables,
    _write,
    write_until_only_a_snapshot_catches_up,
)
from univrs.raft.messages import InstallSnapshot, Membership, SnapshotMeta
from univrs.runtime.feeding import SnapshotFeeds
from univrs.runtime.snapshots import SnapshotChecker
from univrs.storage.sm_feed import ChunkFeed

pytestmark = pytest.mark.timeout(300)


async def test_a_snapshot_in_many_chunks_is_staged_while_it_streams_in(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A follower that catches up by a snapshot of many chunks (256 bytes each here): its check
    says the state was staged while streamed (``staged_while_streamed``) and passed; the
    installed tables are the leader's. Fails on the code before: the check staged the
    joined data once the last chunk had come (no such field)."""
    caplog.set_level(logging.INFO, logger="univrs.node")
    configs = _configs(
        tmp_path,
        3,
        snapshot_threshold=16,
        snapshot_trailing_entries=4,
        snapshot_max_chunk_size=256,
    )
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery=nursery, configs=configs)
        for nid in configs:
            await cluster.start(nid)
        leader = await cluster.wait_leader()
        victim = "n3" if leader.config.node_id != "n3" else "n2"
        await _write(leader, 1, 40)
        await cluster.kill(victim)
        await write_until_only_a_snapshot_catches_up(cluster, victim, 41)
        caplog.clear()
        await cluster.start(victim)
        leader = await cluster.wait_leader()

        def checked() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.getMessage() == "snapshot checked"]

        await wait_until(checked, "the victim's check of the leader's snapshot", 60)
        await wait_until(
            lambda: cluster.nodes[victim].runtime.applied_index >= leader.runtime.applied_index,
            "the victim caught up",
            60,
        )
        record = checked()[0]
        assert getattr(record, "problem", "missing") is None
        assert getattr(record, "staged_while_streamed", None) is True
        received = [r for r in caplog.records if r.getMessage() == "snapshot received"]
        assert received and getattr(received[0], "bytes", 0) > 4 * 256  # many chunks
        assert _tables(cluster.nodes[victim]) == _tables(leader)
        nursery.cancel_scope.cancel()


@attrs.define
class _Core:
    """What ``SnapshotFeeds`` asks of the core: its check and the snapshot it receives."""

    snapshot_check: SnapshotChecker
    receiving: tuple[tuple[SnapshotMeta, int, int], int] | None = None

    def snapshot_receiving(self) -> tuple[tuple[SnapshotMeta, int, int], int] | None:
        return self.receiving


def _chunks(data: bytes, size: int, index: int = 7) -> list[InstallSnapshot]:
    meta = SnapshotMeta(index=index, term=1, membership=Membership(voters=frozenset({"a"})))
    return [
        InstallSnapshot(
            term=1,
            src="a",
            dst="b",
            meta=meta,
            offset=at,
            data=data[at : at + size],
            done=at + size >= len(data),
            total_size=len(data),
            checksum=zlib.crc32(data),
        )
        for at in range(0, len(data), size)
    ]


def _take(core: _Core, feeds: SnapshotFeeds, msg: InstallSnapshot) -> None:
    """The core takes ``msg`` (as ``step`` would), then the driver's ``after_step``."""
    core.receiving = ((msg.meta, msg.total_size, msg.checksum), msg.offset + len(msg.data))
    feeds.after_step(cast(Any, core), msg)


def test_a_feed_stages_only_what_the_core_took_and_stops_when_it_is_moot() -> None:
    """``SnapshotFeeds``: a feed starts at a snapshot's first chunk the core takes and is fed
    each next one; its staging is used only for exactly the data completed; a chunk the core
    did not take is not fed; the feed stops (its staging ends with nothing) when the core no
    longer receives that snapshot, at a gap, and at close; none starts midway."""
    seen: list[bytes] = []
    done = threading.Event()
    staged: Any = object()  # what the fake staging gives

    def stage(feed: ChunkFeed) -> Any:
        try:
            seen.append(feed.reader().read())  # blocks until the end (or the stop)
            return staged
        finally:
            done.set()

    core = _Core(snapshot_check=SnapshotChecker(into_feed=stage))
    data = bytes(range(256)) * 3
    *body, last = _chunks(data, 100)
    feeds = SnapshotFeeds()
    for msg in body:
        _take(core, feeds, msg)
        feeds.after_step(cast(Any, core), msg)  # a duplicate the core refused: not fed twice
    feeding = feeds.finish(last)
    assert feeding is not None and feeds.current is None
    assert feeding.staged(data) is staged and seen == [data]
    assert feeding.staged(data[:-1] + b"\x00") is None  # other bytes: not used

    # The core stops receiving it (a new term, a catch-up by the log): the feed stops.
    done.clear()
    feeds = SnapshotFeeds()
    _take(core, feeds, body[0])
    core.receiving = None
    assert feeds.maybe_stop(cast(Any, core)) and feeds.current is None
    assert done.wait(10) and len(seen) == 1  # ended by the stop, nothing staged

    # A gap, then a snapshot begun before the node looked: no feed.
    done.clear()
    _take(core, feeds, body[0])
    current = feeds.current
    assert current is not None
    _take(core, feeds, body[2])
    assert feeds.current is None and current.feed.stopped and done.wait(10)
    _take(core, feeds, body[3])
    assert feeds.current is None
    assert feeds.finish(last) is None

    # Another snapshot's chunks replace the feed; close stops the one left.
    done.clear()
    _take(core, feeds, body[0])
    first = feeds.current
    other = _chunks(data[::-1], 100, index=9)
    _take(core, feeds, other[0])
    assert first is not None and first.feed.stopped and feeds.current is not first
    assert done.wait(10)
    done.clear()
    feeds.stop()
    assert done.wait(10) and len(seen) == 1
