"""Snapshots and log compaction (dissertation 5.1-5.3): RaftNode's snapshot half.

Theory of operation
-------------------
The runtime snapshots its state machine at some applied index and stores it durably, then calls
``snapshot_taken(meta, data, keep=k)``. The core keeps ``data`` as its newest snapshot (to
stream to followers) and forgets its log up to ``min(meta.index - k, _compaction_limit())``;
it returns that index so the runtime compacts storage to the same point. The limit,
min(applied, commit), keeps compaction behind what is committed *and* applied: entries past it
may still be needed to apply or may still be replaced (the simulator's mutants break it).

Leader (the sending code is in snapshot_stream.py, just below leader.py's replication that
starts it): a follower whose next entry is compacted away (``_send_append`` finds no term for
its prev index) enters SNAPSHOT and gets the newest snapshot streamed (snapshot.py:
``SnapshotSender``) in ``snapshot_chunk_bytes`` chunks, at most ``snapshot_window`` in flight,
resumed from the last acknowledged offset after ``_snapshot_resume_ticks()`` ticks without news.
Heartbeats keep flowing meanwhile (the runtime's transport carries InstallSnapshot in a bulk
lane). When the follower reports it installed (success, offset == size) its ``match`` becomes
the snapshot index and it is probed from there. A snapshot taken mid-stream does not interrupt
the stream: it finishes with the data it started with (a sender holds a reference), and a later
probe that again finds its entries compacted gets the newer one.

Follower: chunks for the snapshot being received are accepted in order, and only from the
leader this node followed in its current term before the chunk came; anything else is answered
with the byte count held, so the leader resumes there (a stale term's chunk is only answered
with our term, like any stale message; a new term's first chunk, or one from a leader we did
not know, makes us follow its sender, which then resends). So no stream from anyone but our
term's leader is ever completed or checked, and ``snapshot_check_due`` (gate.py, what the
runtime asks before it checks the last chunk off its event loop) says so too. The complete data
is verified (size and crc32), then checked by the runtime's ``snapshot_check`` (can the state
machine restore it?); a mismatch or a refusal discards it and answers offset 0 (a refusal is
counted in ``Status.refused``). Nothing changes before that. A snapshot announcing more than
``RaftConfig.max_snapshot_bytes`` is refused outright, so at most that much is ever held, for
one snapshot at a time. A verified snapshot resets the log (keeping the suffix if the log has
the snapshot's last entry, paper Figure 13 step 6), moves commit to at least its index, takes
its membership as the base configuration and leaves in ``Ready.snapshot``; the success answer
waits for the persist.
A snapshot at or below our commit index is acknowledged without installing.
"""

from __future__ import annotations

from univrs.raft.leader import LeaderLayer
from univrs.raft.messages import (
    InstallSnapshot,
    InstallSnapshotResponse,
    SnapshotMeta,
)
from univrs.raft.native import mypyc_attr
from univrs.raft.progress import ProgressState
from univrs.raft.ready import Role, SnapshotInstall
from univrs.raft.senders import REFUSED_SNAPSHOT_DATA, REFUSED_SNAPSHOT_SIZE
from univrs.raft.snapshot import AckOutcome, Snapshot, SnapshotData, SnapshotReceiver


@mypyc_attr(allow_interpreted_subclasses=True)
class SnapshotLayer(LeaderLayer):
    """Snapshots, compaction, InstallSnapshot receiving (module docstring; layers: base.py)."""

    # ---- hooks (mutants override these; the real logic goes through them) --------------------

    def _compaction_limit(self) -> int:
        """The highest index the log may be compacted to: committed *and* applied."""
        return min(self._applied, self._commit)

    # ---- the runtime took a snapshot -----------------------------------------------------------

    def snapshot_taken(self, meta: SnapshotMeta, data: SnapshotData, *, keep: int = 0) -> int:
        """The runtime durably stored a snapshot at ``meta.index`` (its state machine's applied
        index, which may be ahead of what ``applied()`` reported, never beyond the entries
        handed out nor beyond what ``persisted()`` reported: ValueError).

        Keeps ``data`` to stream to followers (if newer than the snapshot held), drops the
        in-memory log up to ``min(meta.index - keep, _compaction_limit())`` and returns that
        index (>= 0): the runtime compacts storage up to it. Also used at start-up with the
        stored snapshot, so a restarted leader can stream it.
        """
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        if meta.index > self._handed:
            # The state machine can only reflect entries handed out in Ready.committed. (It may
            # be ahead of what applied() reported so far: the limit below covers that.)
            raise ValueError(
                f"snapshot at {meta.index} beyond the entries handed out to apply ({self._handed})"
            )
        if meta.index > self._persisted:
            # Only right after an install, before its write is reported: storing another
            # snapshot then races that write (storage would lack the entries it covers).
            raise ValueError(
                f"snapshot at {meta.index} beyond the durable log ({self._persisted}): take "
                "snapshots only of what persisted() reported"
            )
        term = self._log.term_at(meta.index)
        if term is not None and term != meta.term:
            raise ValueError(f"snapshot at ({meta.index}, {meta.term}) but the log has term {term}")
        if self._snapshot is None or meta.index > self._snapshot.meta.index:
            self._snapshot = Snapshot(meta=meta, data=data)
            self._snapshot_index = max(self._snapshot_index, meta.index)
            if self._role is Role.LEADER:
                for peer, pr in self._progress.items():
                    if pr.state is ProgressState.SNAPSHOT and pr.snapshot is None:
                        self._start_snapshot(peer, pr)
        upto = max(0, min(meta.index - keep, self._compaction_limit()))
        if upto > self._log.snapshot_index:
            self._log.compact(upto)
            self._configs.compact(upto)
        return upto

    def snapshot_damaged(self, meta: SnapshotMeta) -> bool:
        """The runtime found the stored snapshot at ``meta`` damaged (a scrub, or a read that
        failed while streaming it): if the core holds a snapshot at ``meta``, it stops
        offering it (the streams of it end; their peers wait for the next ``snapshot_taken``,
        which the runtime calls once it has stored a new snapshot from its state, possibly
        at the same index). True if it held one. Nothing is compacted meanwhile."""
        snap = self._snapshot
        dropped = False
        if snap is not None and snap.meta == meta:
            self._snapshot_unreadable(snap)
            dropped = True
        for pr in self._progress.values():
            sender = pr.snapshot
            if sender is not None and sender.meta == meta:
                self._snapshot_unreadable(sender.snapshot)  # an older snapshot's stream
        return dropped

    # ---- leader: streaming -----------------------------------------------------------------

    def _on_snapshot_response(self, msg: InstallSnapshotResponse) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.heard_at = self._now
        sender = pr.snapshot
        if (
            pr.state is not ProgressState.SNAPSHOT
            or sender is None
            or msg.snapshot_index != sender.meta.index
        ):
            return  # stale: about another stream
        outcome = sender.on_response(msg.offset, msg.success)
        if outcome is AckOutcome.DONE:
            # The follower installed it (or already had its entries): probe from there.
            pr.maybe_update(sender.meta.index)
            pr.next = pr.match + 1
            pr.become_probe()
            self._send_append(msg.src, pr, send_if_empty=True)
        elif outcome is AckOutcome.PROGRESS:
            self._send_snapshot_chunks(msg.src, sender)

    # ---- follower: receiving ---------------------------------------------------------------

    def _snapshot_answer(self, msg: InstallSnapshot, offset: int, *, success: bool) -> None:
        answer = InstallSnapshotResponse(
            term=self._term,
            src=self.id,
            dst=msg.src,
            snapshot_index=msg.meta.index,
            offset=offset,
            success=success,
        )
        if success and offset >= msg.total_size:
            # "Installed" claims a durable snapshot (or durable entries up to its index).
            self._send_after_persist(answer)
        else:
            self._send(answer)

    def _from_followed_leader(self, msg: InstallSnapshot) -> bool:
        """Is ``msg`` from the leader this node follows in its current term (as things stand
        before ``msg`` is stepped)? Only such a chunk is taken, so only such a stream is
        ever checked (``snapshot_check_due``)."""
        return msg.term == self._term and self._role is not Role.LEADER and self._leader == msg.src

    def _on_install_snapshot(self, msg: InstallSnapshot, *, followed: bool) -> None:
        """``followed``: ``_from_followed_leader(msg)`` before ``step`` handled its term."""
        if msg.total_size > self.config.max_snapshot_bytes:
            # Refused before anything is held or changed (the partial one goes too: a
            # stream that grows past the bound is never completed).
            self._receiving = None
            self._refuse(REFUSED_SNAPSHOT_SIZE)
            return
        if not self._follow(msg.src):
            return
        meta = msg.meta
        if meta.index <= self._commit:
            # We hold (committed) everything it covers; our log may be longer: keep it.
            self._receiving = None
            self._snapshot_answer(msg, msg.total_size, success=True)
            return
        rx = self._receiving
        if not followed:
            # A sender we did not follow in our term before this chunk (its new term's first
            # word to us, or a leader we did not know): we follow it now (above), but take
            # no data from this chunk, so no stream of anyone else's is ever completed and
            # checked. The answer says what we hold of that snapshot; the leader resends from
            # there, to a node that now follows it. Nothing is held, nothing is counted.
            held = rx.received if rx is not None and rx.same_snapshot(msg) else 0
            self._snapshot_answer(msg, held, success=False)
            return
        if rx is None or not rx.same_snapshot(msg):
            # Another snapshot than the partial one held (if any): that one is abandoned.
            rx = self._receiving = SnapshotReceiver.for_message(msg)
        if msg.offset != rx.received:
            self._snapshot_answer(msg, rx.received, success=False)  # resume where we are
            return
        if not rx.accept(msg.data):
            self._receiving = None  # more data than announced: corrupt, start over
            self._snapshot_answer(msg, 0, success=False)
            return
        if not msg.done:
            self._snapshot_answer(msg, rx.received, success=True)
            return
        self._receiving = None
        data = rx.verified()
        if data is None:
            self._snapshot_answer(msg, 0, success=False)  # size or checksum mismatch
            return
        check = self.snapshot_check
        if check is not None and check(meta, data) is not None:
            # Complete and intact, but not a snapshot this state machine can restore (garbage
            # that is valid CBOR, a forged state): refused before anything is stored or
            # replaced, and counted; we keep our state and answer like a checksum failure.
            self._refuse(REFUSED_SNAPSHOT_DATA)
            self._snapshot_answer(msg, 0, success=False)
            return
        self._install_snapshot(meta, data)
        self._snapshot_answer(msg, msg.total_size, success=True)

    def _receiver_to_check(self, msg: InstallSnapshot) -> SnapshotReceiver | None:
        """The receiver that stepping ``msg`` would add its data to and check once complete
        (the partial one held, or the one the step starts), or None if ``step`` would take no
        data of ``msg`` into a checked snapshot: no check, not addressed to us, not from the
        leader we follow in our term (``_from_followed_leader``), at or below our commit
        index, past the size bound. A query; the sender rule is gate.py's
        (``snapshot_check_due`` there asks both)."""
        if not (
            self.snapshot_check is not None
            and msg.dst == self.id
            and self._from_followed_leader(msg)
            and msg.meta.index > self._commit
            and msg.total_size <= self.config.max_snapshot_bytes
        ):
            return None
        rx = self._receiving
        if rx is None or not rx.same_snapshot(msg):
            rx = SnapshotReceiver.for_message(msg)  # what the step starts (one-chunk snapshot)
        return rx

    def _install_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Replace our state with a verified snapshot newer than our commit index."""
        assert meta.index > self._commit >= self._applied, f"install {meta} on {self!r}"
        kept = self._log.install(meta.index, meta.term)
        if not kept:
            # Our entries after the snapshot conflicted or were missing: all gone, and storage
            # drops them too when it stores the snapshot.
            self._persisted = min(self._persisted, meta.index - 1)
        before = self._configs.current
        changed = self._configs.install(
            meta.index, meta.membership, keep_suffix=kept, commit=self._commit
        )
        self._commit = meta.index
        # The state machine is restored from the snapshot, not by applying entries: nothing up
        # to meta.index is handed out any more. The runtime reports applied(meta.index).
        self._handed = meta.index
        self._snapshot = Snapshot(meta=meta, data=data)
        self._snapshot_index = meta.index
        self._out_snapshot = SnapshotInstall(meta=meta, data=data)
        if changed:
            self._on_config_change(before)
        self._role = Role.FOLLOWER if self._promotable() else Role.LEARNER
