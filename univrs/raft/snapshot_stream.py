"""InstallSnapshot sending: the leader streams its newest snapshot to a peer that needs
compacted entries (``SnapshotStreamLayer``, under ``LeaderLayer``; layers: base.py). The theory
is in compaction.py; snapshot.py has the sender.
"""

from __future__ import annotations

import attrs

from univrs.raft.commit_notice import CommitNoticeLayer
from univrs.raft.messages import InstallSnapshot, NodeId
from univrs.raft.progress import Progress
from univrs.raft.snapshot import SnapshotSender


@attrs.define(eq=False, init=False, repr=False)
class SnapshotStreamLayer(CommitNoticeLayer):
    """Snapshot streaming to peers (see the module docstring; layers: base.py)."""

    # ---- hooks (mutants override these; the real logic goes through them) --------------------

    def _snapshot_resume_ticks(self) -> int:
        """Ticks without any acknowledgement after which a stream resumes from the last
        acknowledged offset (the connection is presumed dropped)."""
        return self.config.election_ticks_max

    def _start_snapshot(self, peer: NodeId, pr: Progress) -> None:
        """``peer`` needs compacted entries: stream the newest snapshot (once we have its data)."""
        pr.become_snapshot()
        snap = self._snapshot
        if snap is None:
            return  # restarted and not given the data yet: snapshot_taken starts the stream
        assert snap.meta.index >= pr.next - 1, f"snapshot {snap.meta} behind {peer}'s needs"
        pr.snapshot = SnapshotSender(
            snapshot=snap,
            chunk_bytes=self.config.snapshot_chunk_bytes,
            window=self.config.snapshot_window,
        )
        self._send_snapshot_chunks(peer, pr.snapshot)

    def _send_snapshot_chunks(self, peer: NodeId, sender: SnapshotSender) -> None:
        snap = sender.snapshot
        for chunk in sender.take_chunks():
            self._send(
                InstallSnapshot(
                    term=self._term,
                    src=self.id,
                    dst=peer,
                    meta=snap.meta,
                    offset=chunk.offset,
                    data=chunk.data,
                    done=chunk.done,
                    total_size=snap.size,
                    checksum=snap.checksum,
                )
            )

    def _tick_snapshots(self) -> None:
        resume = self._snapshot_resume_ticks()
        for peer, pr in self._progress.items():
            sender = pr.snapshot
            if sender is not None and sender.tick(resume):
                self._send_snapshot_chunks(peer, sender)
