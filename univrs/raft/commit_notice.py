"""Commit notices: when the leader tells a follower a commit index no append carried
(``CommitNoticeLayer``, under ``LeaderLayer``; layers: base.py).

Commit notices. Every AppendEntries carries the commit index; a follower that holds entries it
cannot know are committed, and to which no append is about to go, needs a commit-only Heartbeat
(which it answers). With ``lazy_commit_notice_bytes`` 0 the leader sends it at every commit.
With N > 0 (what nodes run) a commit whose news to that follower covers at most N bytes of
entries waits for the next append, or for the next tick if none came (``_tell_commits``): one
client writing then costs each follower one message each way per write instead of two
(tests/raft/test_raft_commit_notice.py); such a notice carries ``COMMIT_NOTICE_CTX`` and
is not answered (``_commit_notice_ctx``). A larger commit is told at once, so the follower
applies it while the leader applies its own copy and prepares the next batch, not when the next
batch arrives (where the apply would delay its acknowledgement: measured, docs/performance.md,
"Round 7"); so is a commit a follower waits for to serve a ReadIndex read we answered
(``Progress.read_index``).
"""

from __future__ import annotations

from univrs.raft.base import NodeBase
from univrs.raft.messages import COMMIT_NOTICE_CTX, Heartbeat, NodeId
from univrs.raft.native import mypyc_attr
from univrs.raft.progress import Progress, ProgressState


@mypyc_attr(allow_interpreted_subclasses=True)
class CommitNoticeLayer(NodeBase):
    """Commit-only heartbeats to followers (see the module docstring; layers: base.py)."""

    def _notify_commit(self, old_commit: int) -> None:
        """Tell followers a commit index they cannot know yet (``_maybe_tell_commit`` decides
        whether now or later: the module docstring)."""
        for peer, pr in self._progress.items():
            self._maybe_tell_commit(peer, pr)

    def _lazy_commit_notices(self) -> bool:
        return self.config.lazy_commit_notice_bytes > 0

    def _commit_notice_can_wait(self, pr: Progress, known: int) -> bool:
        """May the news that entries ``commit_sent + 1 .. known`` are committed wait for the next
        append or tick? Only if they are small and the follower waits on no read for them."""
        limit = self.config.lazy_commit_notice_bytes
        if limit <= 0 or pr.read_index > pr.commit_sent:
            return False
        lo = pr.commit_sent + 1
        if lo <= self._log.snapshot_index:
            return False
        news = self._log.slice(lo, known - lo + 1, limit)
        return len(news) == known - lo + 1 and sum(len(e.data) for e in news) <= limit

    def _tell_commits(self) -> None:
        """Each tick (lazy notices): tell every follower a commit index no append told it."""
        for peer, pr in self._progress.items():
            self._maybe_tell_commit(peer, pr, now=True)

    def _maybe_tell_commit(self, peer: NodeId, pr: Progress, *, now: bool = False) -> None:
        """Send ``peer`` a commit-only heartbeat if it holds committed entries it cannot know
        are committed (and no append to it is about to carry the news), unless the news may
        wait (``now``: it may not)."""
        known = min(self._commit, pr.match)
        if known <= pr.commit_sent or pr.state is not ProgressState.REPLICATE:
            return
        if pr.next <= self._log.last_index and not pr.is_paused():
            return  # an append goes out to it with the new commit
        if not now and self._commit_notice_can_wait(pr, known):
            return
        pr.commit_sent = known
        self._send(
            Heartbeat(
                term=self._term, src=self.id, dst=peer, commit=known, ctx=self._commit_notice_ctx()
            )
        )

    def _commit_notice_ctx(self) -> int:
        """The ``ctx`` of a commit notice. With lazy notices (what nodes run)
        ``COMMIT_NOTICE_CTX``: the follower takes the commit and does not answer (the answer
        told us nothing its AppendEntriesResponse had not, and, arriving while the next batch
        was in flight, drew an empty AppendEntries and its answer: docs/performance.md, "Round
        15 (s15-repl)"). With eager notices (``lazy_commit_notice_bytes`` 0, the core's default)
        0, answered as before: the core's transcripts and the simulator's pinned seeds were
        found with those answers, and their schedules depend on every message."""
        return COMMIT_NOTICE_CTX if self._lazy_commit_notices() else 0

    def _confirmed_read(self, ctx: int, requester: NodeId | None, index: int) -> None:
        pr = self._progress.get(requester) if requester is not None else None
        if requester is not None and pr is not None and self._lazy_commit_notices():
            # The follower serves the read once it applied ``index``: tell it the commit
            # index now (and as soon as its acknowledgements let it know more), not at a tick.
            pr.read_index = max(pr.read_index, index)
            self._maybe_tell_commit(requester, pr)
        super()._confirmed_read(ctx, requester, index)
