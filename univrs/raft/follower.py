"""The follower half of RaftNode: the AppendEntries receiver (paper Figure 2), commit, truncation.

Acknowledgements claim durable entries, so they go through ``_send_after_persist``; rejections
claim nothing and carry the fast-backtracking hint (AppendEntriesResponse docstring). Entries at
or below our commit index are committed, hence in every later leader's log (paper 5.4): the part
of an append they cover is skipped, which also makes appends below a compacted prefix harmless.
"""

from __future__ import annotations

from univrs.raft.compaction import SnapshotLayer
from univrs.raft.messages import AppendEntries, AppendEntriesResponse
from univrs.raft.native import mypyc_attr
from univrs.raft.ready import Role


@mypyc_attr(allow_interpreted_subclasses=True)
class FollowerLayer(SnapshotLayer):
    """Follower-side log handling of RaftNode (module docstring; layers: base.py)."""

    def _on_append(self, msg: AppendEntries) -> None:
        """AppendEntries receiver (paper Figure 2), acknowledging only after persist."""
        prev, prev_term, entries = msg.prev_log_index, msg.prev_log_term, msg.entries
        commit = self._commit
        if prev < commit:
            # Our entries up to commit are committed, hence in every later leader's log (5.4):
            # skip the part of the message they cover.
            if prev + len(entries) <= commit:
                self._send_after_persist(
                    AppendEntriesResponse(
                        term=self._term, src=self.id, dst=msg.src, success=True, index=commit
                    )
                )
                return
            skip = commit - prev
            prev_term = entries[skip - 1].term
            entries = entries[skip:]
            prev = commit
        if self._log.term_at(prev) != prev_term:
            self._reject_append(msg, prev)
            return
        if entries:
            conflict = self._log.find_conflict(entries)
            if conflict:
                if conflict <= self._log.last_index:
                    self._truncate(conflict)
                self._append_entries(entries[conflict - entries[0].index :])
        last_new = prev + len(entries)
        self._commit_to(min(msg.commit, last_new))
        self._send_after_persist(
            AppendEntriesResponse(
                term=self._term, src=self.id, dst=msg.src, success=True, index=last_new
            )
        )

    def _reject_append(self, msg: AppendEntries, prev: int) -> None:
        """Reject with the fast-backtracking hint (see AppendEntriesResponse)."""
        log = self._log
        if prev > log.last_index:
            hint_index, hint_term = log.last_index, 0
        else:
            term = log.term_at(prev)
            assert term is not None
            hint_term = term
            hint_index = log.first_index_of_term_at(prev) if prev > log.snapshot_index else prev
        self._send(
            AppendEntriesResponse(
                term=self._term,
                src=self.id,
                dst=msg.src,
                success=False,
                index=msg.prev_log_index,
                hint_index=hint_index,
                hint_term=hint_term,
            )
        )

    def _commit_to(self, index: int) -> None:
        if index > self._commit:
            assert index <= self._log.last_index, f"commit {index} beyond {self._log}"
            self._commit = index
            # A demotion may just have committed: may we still campaign?
            self._role = Role.FOLLOWER if self._promotable() else Role.LEARNER
            if self._receiving is not None and index >= self._receiving.meta.index:
                self._receiving = None  # caught up through the log: the partial is useless

    def _truncate(self, index: int) -> None:
        assert index > self._commit, f"truncating committed entries at {index} ({self!r})"
        self._log.truncate_from(index)
        if self._persisted >= index:
            self._persisted = index - 1
        before = self._configs.current
        if self._configs.on_truncate(index):
            self._on_config_change(before)
