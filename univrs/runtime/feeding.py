"""The leader's snapshot staged while it streams in (s13-scale; docs/state-at-scale.md).

The check of a leader's snapshot (checking.py) stages it into a new state environment, about
12 s of one core at 1,000,000 + 1,000,000 objects, and the stream before it takes 4 to 10 s
here: until s13-scale one after the other. ``SnapshotFeeds`` overlaps them on the LMDB
backend: after the driver steps a chunk the core took into the snapshot it receives
(``RaftNode.snapshot_receiving`` says how many bytes it holds, in order), the same bytes
object goes to a ``ChunkFeed`` that a thread of its own stages as it reads
(``StateEnv.stage_feed``, univrs/storage/sm_feed.py). The last chunk, whose check begins,
ends the feed (``finish``); the check then waits for that staging instead of staging the
joined data, and uses it only if the bytes fed are exactly the data the core completed and
verified (``Feeding.staged``). Anything else (a feed begun midway, a gap, a snapshot the one
walk does not take, any failure) leaves no result and the check stages the joined data as
before, so nothing is accepted that was not before.

A feed whose snapshot the core no longer receives (another snapshot, none: a leader change,
a catch-up by the log) is stopped (``maybe_stop``, asked after every step), as is the one
left at shutdown (``close``): its thread ends at its next read or poll and leaves nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import attrs

from univrs.raft.messages import InstallSnapshot, SnapshotMeta
from univrs.raft.node import RaftNode
from univrs.runtime.snapshots import SnapshotChecker
from univrs.sm.snapshot_format import CheckStopped
from univrs.sm.state import ClusterStateMachine
from univrs.storage.sm_feed import ChunkFeed

log = logging.getLogger("univrs.node")

__all__ = ["Feeding", "SnapshotFeeds"]

Key = tuple[SnapshotMeta, int, int]  # meta, total size, checksum: one snapshot's stream


def _key(msg: InstallSnapshot) -> Key:
    return (msg.meta, msg.total_size, msg.checksum)


@attrs.define(eq=False)
class Feeding:
    """One snapshot's bytes staged as they come, in a thread of its own."""

    key: Key
    feed: ChunkFeed
    thread: threading.Thread | None = None
    _result: list[ClusterStateMachine | None] = attrs.field(factory=list)

    def run(self, stage: Callable[[ChunkFeed], ClusterStateMachine | None]) -> None:
        try:
            self._result.append(stage(self.feed))
        except CheckStopped:
            self._result.append(None)
        except Exception:  # the check stages the joined data instead, and decides
            log.warning("snapshot staging while streamed failed", exc_info=True)
            self._result.append(None)

    def staged(self, data: bytes) -> ClusterStateMachine | None:
        """Blocking (the check's worker thread): the state staged from the bytes fed, if they
        are exactly ``data`` (the data the core completed and verified); else None."""
        if self.thread is not None:
            self.thread.join()
        sm = self._result[0] if self._result else None
        if sm is not None and not self.feed.same_bytes(data):
            return None
        return sm


@attrs.define(eq=False)
class SnapshotFeeds:
    """The feed of the snapshot the core receives now, if any (at most one)."""

    current: Feeding | None = None

    def after_step(self, core: RaftNode, msg: InstallSnapshot) -> None:
        """After the driver stepped ``msg``: feed its data if the core took it (in order, into
        the snapshot it receives); start a feed at a snapshot's first chunk."""
        check = core.snapshot_check
        stage = check.into_feed if isinstance(check, SnapshotChecker) else None
        if stage is None or msg.done:
            return  # no staging while streamed; a last chunk is the check's (``finish``)
        held = core.snapshot_receiving()
        key = _key(msg)
        if held is None or held[0] != key or held[1] != msg.offset + len(msg.data):
            self.maybe_stop(core)
            return  # not taken by this step (a duplicate, out of order, refused)
        current = self.current
        if current is not None and current.key == key and current.feed.fed == held[1]:
            return  # already fed: a copy of the chunk the core took last (it refused it)
        if current is not None and current.key != key:
            self.stop()
            current = None
        if current is None:
            if msg.offset != 0:
                return  # begun before this node looked: the check stages the joined data
            current = self.current = Feeding(key=key, feed=ChunkFeed(msg.total_size))
            current.thread = threading.Thread(
                target=current.run, args=(stage,), name="univrs-snapshot-feed", daemon=True
            )
            current.thread.start()
        if current.feed.fed != msg.offset or not current.feed.put(msg.data):
            self.stop()  # a gap: never completes the same bytes

    def finish(self, msg: InstallSnapshot) -> Feeding | None:
        """The last chunk ``msg``, whose check begins: its snapshot's feed, fed ``msg``'s
        data and ended; None if there is none (another one is stopped)."""
        current, self.current = self.current, None
        if current is None:
            return None
        if current.key != _key(msg) or not (
            current.feed.fed == msg.offset and current.feed.put(msg.data)
        ):
            current.feed.stop()
            return None
        current.feed.end()
        return current

    def maybe_stop(self, core: RaftNode) -> bool:
        """Stop the feed if the core no longer receives its snapshot; True if stopped."""
        current = self.current
        if current is None:
            return False
        held = core.snapshot_receiving()
        if held is not None and held[0] == current.key:
            return False
        self.stop()
        return True

    def stop(self) -> None:
        current, self.current = self.current, None
        if current is not None:
            current.feed.stop()
