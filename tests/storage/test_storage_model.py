"""Hypothesis: random appends, truncations, snapshots, compactions, reopens agree with a model."""

from __future__ import annotations

import pathlib
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from univrs.raft.messages import Entry, EntryKind, HardState, Membership, SnapshotMeta
from univrs.storage import LogCompacted, LogStore

MEMBERS = Membership(voters=frozenset({"n1"}))


class StoreModel(RuleBasedStateMachine):
    """The store against a dict of entries, a snapshot and a hard state."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="univrs-model-")
        self.path = pathlib.Path(self.tmp.name)
        self.store = LogStore.open(self.path, node_id="n1")
        self.log: dict[int, Entry] = {}
        self.snap: tuple[SnapshotMeta, bytes] | None = None
        self.hard_state = HardState()
        self.term = 1  # every entry's term is <= self.term

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    # The model's view, as defined in log_store's docstring.
    @property
    def snap_index(self) -> int:
        return self.snap[0].index if self.snap else 0

    @property
    def last(self) -> int:
        return max(self.log) if self.log else self.snap_index

    @property
    def first(self) -> int:
        return min(self.log) if self.log else self.last + 1

    @rule(
        back=st.integers(0, 6),
        count=st.integers(0, 6),
        bump=st.booleans(),
        hs=st.none() | st.tuples(st.integers(0, 50), st.none() | st.sampled_from(["n1", "n2"])),
        data=st.binary(max_size=30),
    )
    def append(
        self,
        back: int,
        count: int,
        bump: bool,
        hs: tuple[int, str | None] | None,
        data: bytes,
    ) -> None:
        self.term += bump
        # Raft never truncates a committed entry, nor stores a commit past its last entry (the
        # store refuses such a data dir at open): the model keeps to both.
        back = min(back, self.last - max(self.snap_index, self.hard_state.commit))
        truncate_from = self.last - back + 1 if back else None
        start = truncate_from if truncate_from is not None else self.last + 1
        entries = [
            Entry(term=self.term, index=i, kind=EntryKind(i % 2), data=data + b"%d" % i)
            for i in range(start, start + count)
        ]
        last = start + count - 1 if count else (start - 1 if truncate_from else self.last)
        commit = None if hs is None else max(min(hs[0], last), self.hard_state.commit)
        hard_state = None if hs is None else HardState(term=hs[0], vote=hs[1], commit=commit or 0)
        self.store.append(hard_state=hard_state, truncate_from=truncate_from, entries=entries)
        if truncate_from is not None:
            self.log = {i: e for i, e in self.log.items() if i < truncate_from}
        self.log.update((e.index, e) for e in entries)
        if hard_state is not None:
            self.hard_state = hard_state

    @precondition(lambda self: any(i >= self.snap_index for i in self.log))
    @rule(pick=st.integers(0, 1000), data=st.binary(max_size=50))
    def local_snapshot(self, pick: int, data: bytes) -> None:
        candidates = sorted(i for i in self.log if i >= self.snap_index)
        index = candidates[pick % len(candidates)]
        meta = SnapshotMeta(index=index, term=self.log[index].term, membership=MEMBERS)
        self.store.save_snapshot(meta, data)
        self.snap = (meta, data)  # the log is kept: it holds the snapshot's last entry

    @rule(ahead=st.integers(0, 5), bump=st.integers(1, 2), data=st.binary(max_size=50))
    def installed_snapshot(self, ahead: int, bump: int, data: bytes) -> None:
        # A leader's snapshot in a newer term: its last entry is not in our log.
        self.term += bump
        meta = SnapshotMeta(index=max(self.last + ahead, 1), term=self.term, membership=MEMBERS)
        self.store.save_snapshot(meta, data)
        self.snap = (meta, data)
        self.log = {}

    @precondition(lambda self: self.snap is not None)
    @rule(back=st.integers(0, 4))
    def compact(self, back: int) -> None:
        up_to = max(self.snap_index - back, 0)
        self.store.compact(up_to)
        self.log = {i: e for i, e in self.log.items() if i > up_to}

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = LogStore.open(self.path, node_id="n1")

    @invariant()
    def agrees_with_the_model(self) -> None:
        store = self.store
        assert (store.first_index(), store.last_index()) == (self.first, self.last)
        assert store.entries(self.first, self.last + 1) == tuple(
            self.log[i] for i in sorted(self.log)
        )
        assert store.load_snapshot() == self.snap
        for index in range(max(self.first - 2, 0), self.last + 3):
            if index in self.log:
                expected: int | None = self.log[index].term
            elif index == self.snap_index and self.snap:
                expected = self.snap[0].term
            elif index == 0:
                expected = 0
            elif index > self.last:
                expected = None
            else:
                try:
                    store.term(index)
                except LogCompacted:
                    continue
                raise AssertionError(f"term({index}) should be compacted")
            assert store.term(index) == expected, index
        state = store.initial_state()
        assert state.entries == tuple(self.log[i] for i in sorted(self.log) if i > self.snap_index)
        assert state.hard_state.term == self.hard_state.term
        assert state.hard_state.vote == self.hard_state.vote
        assert state.hard_state.commit == max(self.hard_state.commit, self.snap_index)


StoreModel.TestCase.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
test_store_agrees_with_a_model = StoreModel.TestCase
