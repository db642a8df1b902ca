"""The in-memory Raft log: entries after a snapshot offset, plus what storage has not seen yet.

Theory of operation
-------------------
Entries live in one Python list; ``_offset`` is the index just before the first kept entry
(the snapshot index, 0 without a snapshot) and ``_offset_term`` its term, so
``index -> _entries[index - _offset - 1]`` is O(1). Appends extend the list (amortized O(1));
truncation deletes a tail (O(removed), amortized O(1) per appended entry); nothing ever copies
the whole log.

The log also tracks what must still go to storage (the "unstable" part, etcd
``log_unstable.go``): entries from ``_unstable_from`` on have not been handed to the runtime in
a Ready yet, and ``_pending_truncate`` is the lowest index storage must delete before appending
them (set when a conflict truncates entries that were already handed out).

Invariants (checked by assertions; a violation is a bug in the core):
- indexes are contiguous: ``_entries[k].index == _offset + 1 + k``;
- terms never decrease along the log and are >= ``_offset_term``;
- ``_offset + 1 <= _unstable_from <= last_index + 1``;
- ``_pending_truncate`` is None or ``_offset < _pending_truncate <= _unstable_from``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import attrs

from univrs.raft.messages import Entry


def _term_key(e: Entry) -> int:
    return e.term


@attrs.define(eq=False, init=False)
class RaftLog:
    """Entries after a snapshot offset, with O(1) term lookup and the not-yet-persisted tail."""

    _entries: list[Entry]
    _offset: int
    _offset_term: int
    _unstable_from: int
    _pending_truncate: int | None

    def __init__(
        self, *, entries: Sequence[Entry] = (), snapshot_index: int = 0, snapshot_term: int = 0
    ) -> None:
        self._entries = []
        self._offset = snapshot_index
        self._offset_term = snapshot_term
        self._unstable_from = snapshot_index + 1
        self._pending_truncate = None
        if entries:
            self.append(entries)
        # Entries given at start-up come from storage: they are already durable.
        self._unstable_from = self.last_index + 1

    # ---- positions ---------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        """The first index held in memory (snapshot index + 1)."""
        return self._offset + 1

    @property
    def last_index(self) -> int:
        return self._offset + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._offset_term

    @property
    def snapshot_index(self) -> int:
        return self._offset

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; the snapshot's term at its index; None if unknown.

        Index 0 (before the first entry) has term 0 when there is no snapshot.
        """
        k = index - self._offset - 1
        if k < 0:
            return self._offset_term if k == -1 else None
        if k >= len(self._entries):
            return None
        return self._entries[k].term

    def entry(self, index: int) -> Entry:
        """The entry at ``index`` (must be in memory)."""
        k = index - self._offset - 1
        assert 0 <= k < len(self._entries), f"entry {index} not in log {self!r}"
        return self._entries[k]

    def entries(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries ``lo..hi`` inclusive (both in memory; empty if ``lo > hi``)."""
        if lo > hi:
            return ()
        assert self._offset < lo and hi <= self.last_index, f"entries {lo}..{hi} out of range"
        return tuple(self._entries[lo - self._offset - 1 : hi - self._offset])

    def slice(self, lo: int, max_count: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from ``lo`` on, at most ``max_count`` of them and about ``max_bytes`` of data.

        Always at least one entry when ``lo <= last_index`` (an oversized entry still goes out
        alone). The byte budget counts ``len(data)``.
        """
        start = lo - self._offset - 1
        assert start >= 0, f"slice from {lo} below first index {self.first_index}"
        stop = min(len(self._entries), start + max_count)
        if start >= stop:
            return ()
        size = 0
        end = start
        while end < stop:
            size += len(self._entries[end].data)
            if size > max_bytes and end > start:
                break
            end += 1
        return tuple(self._entries[start:end])

    # ---- searches (terms are non-decreasing, so binary search) -------------------------------

    def first_index_of_term_at(self, index: int) -> int:
        """The first index (>= first_index) whose entry has the same term as the one at ``index``.

        Used for the fast-backtracking hint (paper 5.3, end).
        """
        term = self.term_at(index)
        assert term is not None and index > self._offset, f"no entry at {index}"
        k = bisect.bisect_left(self._entries, term, 0, index - self._offset, key=_term_key)
        return self._offset + 1 + k

    def last_index_with_term_at_most(self, term: int, upto: int) -> int:
        """The largest index ``<= upto`` whose term is ``<= term`` (the snapshot index if none)."""
        hi = min(upto, self.last_index) - self._offset
        if hi <= 0:
            return self._offset
        k = bisect.bisect_right(self._entries, term, 0, hi, key=_term_key)
        return self._offset + k

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The election restriction (paper 5.4.1): is a log ending at (index, term) at least as
        up to date as this one?"""
        my_term = self.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first entry of ``entries`` that is new or conflicts; 0 if none.

        ``entries`` are contiguous. An entry conflicts when this log has a different term at its
        index (paper Figure 2, AppendEntries receiver step 3).
        """
        for e in entries:
            if self.term_at(e.index) != e.term:
                return e.index
        return 0

    # ---- mutation ----------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append contiguous entries right after the last one."""
        expected = self.last_index + 1
        term = self.last_term
        for e in entries:
            assert e.index == expected, f"append of {e.index}, expected {expected}"
            assert e.term >= term, f"term goes back at {e.index}: {e.term} < {term}"
            expected += 1
            term = e.term
        self._entries.extend(entries)

    def truncate_from(self, index: int) -> None:
        """Delete entries with index >= ``index`` (a conflict, paper Figure 2)."""
        assert self._offset < index <= self.last_index + 1, f"bad truncation at {index}"
        del self._entries[index - self._offset - 1 :]
        if index < self._unstable_from:
            # Storage holds (or will hold) entries from ``index`` on: it must delete them.
            if self._pending_truncate is None or index < self._pending_truncate:
                self._pending_truncate = index
            self._unstable_from = index

    def compact(self, index: int) -> None:
        """Forget the entries up to ``index`` (log compaction, dissertation 5.1).

        The caller guarantees they are durable (``index <= stable_limit``): storage drops them
        itself once the snapshot covering them is stored. ``index`` becomes the offset.
        """
        if index <= self._offset:
            return
        assert index < self._unstable_from, f"compacting non-durable entries up to {index}"
        assert self._pending_truncate is None or index < self._pending_truncate
        term = self.term_at(index)
        assert term is not None, f"compaction to {index} beyond {self!r}"
        del self._entries[: index - self._offset]
        self._offset = index
        self._offset_term = term

    def install(self, index: int, term: int) -> bool:
        """Reset the log to a snapshot ending at (index, term) (paper Figure 13, steps 6-7).

        If the log holds an entry at ``index`` with ``term`` the entries after it are kept
        (True); otherwise the whole log is discarded (False). Storage applies the same rule to
        what *it* holds when it stores the snapshot; when storage will not hold the matching
        entry (not handed out yet, or a pending truncation below it replaces it) it discards
        its log, so the kept suffix is handed to it again from ``index + 1``.
        """
        assert index > self._offset, f"installing a snapshot at {index} behind {self!r}"
        if index <= self.last_index and self.term_at(index) == term:
            storage_keeps = index < self._unstable_from and (
                self._pending_truncate is None or self._pending_truncate > index
            )
            del self._entries[: index - self._offset]
            self._offset = index
            self._offset_term = term
            if not storage_keeps:
                self._pending_truncate = None
                self._unstable_from = index + 1
            return True
        self._entries = []
        self._offset = index
        self._offset_term = term
        self._pending_truncate = None
        self._unstable_from = index + 1
        return False

    # ---- hand-off to storage -----------------------------------------------------------------

    def has_unstable(self) -> bool:
        """True if a Ready must carry a truncation or entries."""
        return self._pending_truncate is not None or self._unstable_from <= self._offset + len(
            self._entries
        )

    @property
    def stable_limit(self) -> int:
        """The last index already handed to storage (durable or being written)."""
        return self._unstable_from - 1

    def take_unstable(self) -> tuple[int | None, tuple[Entry, ...]]:
        """Hand the unstable part to storage: (truncate_from, entries); marks it handed out."""
        truncate = self._pending_truncate
        ents = self.entries(self._unstable_from, self.last_index)
        self._pending_truncate = None
        self._unstable_from = self.last_index + 1
        return truncate, ents

    def __repr__(self) -> str:
        return (
            f"RaftLog(first={self.first_index}, last={self.last_index}, "
            f"last_term={self.last_term}, unstable_from={self._unstable_from})"
        )
