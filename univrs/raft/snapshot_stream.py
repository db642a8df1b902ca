"""InstallSnapshot sending: the leader streams its newest snapshot to a peer that needs
compacted entries (``SnapshotStreamLayer``, under ``LeaderLayer``; layers: base.py). The theory
is in compaction.py; snapshot.py has the sender.

A snapshot whose data cannot be read (``SnapshotUnreadable``: the stored snapshot is damaged,
read on demand by the runtime's storage) is never a failed step: every stream of it ends, the
core forgets it (``_snapshot_unreadable``), and each peer that needed it stays in SNAPSHOT
without a stream, exactly as after a restart before the runtime handed the data over: the
next ``snapshot_taken`` (the runtime takes a new one from its state) starts its stream. The
log is not touched: it is compacted only by ``snapshot_taken``, so no entry goes until a
snapshot was stored again.
"""

from __future__ import annotations

from univrs.raft.commit_notice import CommitNoticeLayer
from univrs.raft.messages import InstallSnapshot, NodeId
from univrs.raft.native import mypyc_attr
from univrs.raft.progress import Progress
from univrs.raft.snapshot import Snapshot, SnapshotSender, SnapshotUnreadable


@mypyc_attr(allow_interpreted_subclasses=True)
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
        try:
            chunks = sender.take_chunks()
        except SnapshotUnreadable:
            # Damaged at rest (or a failed read): the runtime's storage reported it and a new
            # snapshot is being taken; meanwhile nobody is offered this one (module docstring).
            self._snapshot_unreadable(snap)
            return
        for chunk in chunks:
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

    def _snapshot_unreadable(self, snap: Snapshot) -> None:
        """``snap``'s data cannot be read: end every stream of it (their peers wait in
        SNAPSHOT for the next ``snapshot_taken``) and forget it if it is the newest. A stream
        of an older snapshot restarts on the newest one, when there is one."""
        if self._snapshot is snap:
            self._snapshot = None
        for peer, pr in self._progress.items():
            sender = pr.snapshot
            if sender is None or sender.snapshot is not snap:
                continue
            pr.snapshot = None
            if self._snapshot is not None:
                self._start_snapshot(peer, pr)

    def _tick_snapshots(self) -> None:
        resume = self._snapshot_resume_ticks()
        for peer, pr in self._progress.items():
            sender = pr.snapshot
            if sender is not None and sender.tick(resume):
                self._send_snapshot_chunks(peer, sender)
