"""The state machine's object tables: maps and pair indexes ordered by key.

Every replica iterates a table in **key order** (Python string order: by code point, which is
also the byte order of the UTF-8 keys a persistent backend stores), never in insertion or hash
order, so iteration is the same on every replica whatever the history that built the table.
Ordered iteration from a key (``after``) makes a page of a list O(log n + page) instead of a
sort of every key per call.

Two shapes:

* ``Table[V]``: key -> value (workloads, instances, nodes);
* ``PairIndex``: an ordered set of ``(first, second)`` pairs (workload -> instances, node ->
  instances), scanned by ``first``, ordered by ``(first, second)``.

The abstract classes are the interface a backend implements; ``MemoryTable`` and
``MemoryPairIndex`` keep a dict (or nothing) plus a sorted key list (``sortedcontainers``:
O(log n) insert and delete, O(log n + k) range scans). A persistent backend must give the same
answers in the same order (tests/sm/test_tables.py runs the same checks on every backend).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise, takewhile
from typing import Any, Generic, TypeVar

from sortedcontainers import SortedList

V = TypeVar("V")


class Table(abc.ABC, Generic[V]):
    """A map from str keys to values, iterated in key order."""

    @abc.abstractmethod
    def get(self, key: str) -> V | None:
        """The value at ``key``, or None."""

    @abc.abstractmethod
    def put(self, key: str, value: V) -> V | None:
        """Set ``key`` to ``value``; returns the value it replaced (None if it was new)."""

    @abc.abstractmethod
    def pop(self, key: str) -> V:
        """Remove ``key`` and return its value; ``KeyError`` if absent."""

    @abc.abstractmethod
    def __contains__(self, key: object) -> bool: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def keys(self, after: str | None = None) -> Iterator[str]:
        """Keys in order, those greater than ``after`` only if given."""

    @abc.abstractmethod
    def values(self, after: str | None = None) -> Iterator[V]:
        """Values in key order, of the keys greater than ``after`` only if given."""

    @abc.abstractmethod
    def load(self, items: Iterable[tuple[str, V]]) -> list[str]:
        """Fill an empty table in bulk; returns the keys that appeared more than once (the
        last value wins)."""

    def view(self) -> Callable[[], Iterator[V]]:
        """The values now, for later: a function that gives them in key order, callable from
        another thread while the table changes (values are immutable). Taking it should cost
        as little as possible (a snapshot's capture pauses applies); this default copies the
        values in order."""
        values = list(self.values())
        return lambda: iter(values)

    def rows(self, after: str | None = None) -> Iterator[list[Any]] | None:
        """The values in key order (of keys greater than ``after``) as their snapshot rows,
        decoded from storage but not built into objects, when the backend stores them as
        rows (a page renders its documents straight from them: s14-page); None when it
        does not (this default: in memory, where the objects are at hand)."""
        return None

    def raw_view(self) -> RawRows | None:
        """The values now as the bytes a snapshot writes for them, for later (``RawRows``),
        or None when the backend does not store them that way (this default: in memory).
        A backend whose values *are* their snapshot rows in CBOR (the LMDB tables) gives them
        without decoding a single one, so a snapshot is a copy of bytes, not an encoding."""
        return None


class RawRows(abc.ABC):
    """A table's values at one point in time as their snapshot rows, already CBOR-encoded
    (each value is exactly ``cbor2.dumps(row)``, the bytes the snapshot's encoder would write
    for it), in key order. Taken on the event loop in O(1); read later in another thread."""

    @property
    @abc.abstractmethod
    def count(self) -> int:
        """How many values (rows) there are."""

    @abc.abstractmethod
    def chunks(self) -> Iterator[bytes]:
        """The rows' encodings in key order, several rows per chunk (bounded: each chunk is
        a short call into C, so another thread is never held off the interpreter for long)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the view holds (idempotent)."""


class PairIndex(abc.ABC):
    """An ordered set of (first, second) str pairs, scanned by ``first``."""

    # True when adding pairs one at a time costs what a bulk ``load`` does (a persistent
    # index: one put each): a restore then adds them as the instances come instead of
    # collecting every pair first (O(instances) memory). False: collect, then ``load``.
    incremental: bool = False

    @abc.abstractmethod
    def add(self, first: str, second: str) -> None:
        """Add the pair (no effect if present)."""

    @abc.abstractmethod
    def remove(self, first: str, second: str) -> None:
        """Remove the pair; ``ValueError`` if absent."""

    @abc.abstractmethod
    def seconds(self, first: str, after: str | None = None) -> Iterator[str]:
        """The ``second`` of every pair with this ``first``, in order, those greater than
        ``after`` only if given."""

    @abc.abstractmethod
    def __contains__(self, pair: object) -> bool: ...

    @abc.abstractmethod
    def __iter__(self) -> Iterator[tuple[str, str]]: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def load(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Fill an empty index in bulk (duplicates collapse)."""


class StateJournal:
    """Where the state machine reports which entries of its small tables (client sessions,
    the ledger, API tokens) it is about to change, by key; a persistent backend writes their
    new values (read back from the state machine) with the object tables' batch, at its
    commit. Those tables stay Python objects in memory too (bounded: ``SessionPolicy``,
    ``MAX_TOKENS``; accounts are few), so this is a write-through log of keys, not a store.
    This default records nothing (the in-memory backend)."""

    def attach(self, sm: Any) -> None:
        """The state machine (a ``ClusterStateMachine``) whose tables these are: a persistent
        backend reads the changed entries, applied index, term and clock from it."""

    def rewrite(self) -> None:
        """Every small table was replaced (a restore): write all of them in this batch."""

    def session(self, client_id: str) -> None:
        """The session ``client_id`` is opened, changed or dropped in this batch."""

    def opened(self, client_id: str) -> None:
        """The session ``client_id`` is opened in this batch (with ``session``: a backend
        writes its head row, which it holds no version of yet)."""

    def response(self, client_id: str, seq: int) -> None:
        """The session ``client_id`` records its response to ``seq`` in this batch (with
        ``session``: a backend writes this response only, not the whole window)."""

    def balance(self, peer: str) -> None:
        """The balance of ``peer`` changes in this batch."""

    def token(self, token_id: str) -> None:
        """The token ``token_id`` is created or revoked in this batch."""


NO_JOURNAL = StateJournal()


def _by_key(pair: tuple[str, object]) -> str:
    return pair[0]


class MemoryTable(Table[V]):
    """``Table`` in memory: a dict for lookups plus the keys in a sorted list."""

    __slots__ = ("_keys", "_map")

    def __init__(self) -> None:
        self._map: dict[str, V] = {}
        self._keys: SortedList[str] = SortedList()

    def get(self, key: str) -> V | None:
        """The value at ``key``, or None."""
        return self._map.get(key)

    def put(self, key: str, value: V) -> V | None:
        """Set ``key``; returns the replaced value (None if new)."""
        old = self._map.get(key)
        self._map[key] = value
        if old is None:
            self._keys.add(key)
        return old

    def pop(self, key: str) -> V:
        """Remove ``key`` and return its value; ``KeyError`` if absent."""
        value = self._map.pop(key)
        self._keys.remove(key)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __len__(self) -> int:
        return len(self._map)

    def keys(self, after: str | None = None) -> Iterator[str]:
        """Keys in order (greater than ``after`` if given)."""
        if after is None:
            return iter(self._keys)
        return self._keys.irange(minimum=after, inclusive=(False, True))

    def values(self, after: str | None = None) -> Iterator[V]:
        """Values in key order (of keys greater than ``after`` if given)."""
        return map(self._map.__getitem__, self.keys(after))

    def view(self) -> Callable[[], Iterator[V]]:
        """The values now; copying the dict's items is one C-level pass (14 ms at 1,000,000,
        against 0.3 s for the values in key order), the sort by key happens when the view is
        called (in the snapshot encoder's thread)."""
        pairs = list(self._map.items())
        return lambda: (value for _, value in sorted(pairs, key=_by_key))

    def load(self, items: Iterable[tuple[str, V]]) -> list[str]:
        """Fill an empty table; returns the repeated keys. One sort of all keys (linear when
        they come in order, as a snapshot's rows do)."""
        assert not self._map, "load fills an empty table"
        table = self._map
        repeated: list[str] = []
        for key, value in items:
            if key in table:
                repeated.append(key)
            table[key] = value
        self._keys = SortedList(table)
        return repeated


class MemoryPairIndex(PairIndex):
    """``PairIndex`` in memory: the pairs (tuples) in a sorted list."""

    __slots__ = ("_pairs",)

    def __init__(self) -> None:
        self._pairs: SortedList[tuple[str, str]] = SortedList()

    def add(self, first: str, second: str) -> None:
        """Add the pair (no effect if present)."""
        pair = (first, second)
        if pair not in self._pairs:
            self._pairs.add(pair)

    def remove(self, first: str, second: str) -> None:
        """Remove the pair; ``ValueError`` if absent."""
        self._pairs.remove((first, second))

    def seconds(self, first: str, after: str | None = None) -> Iterator[str]:
        """The seconds paired with ``first``, in order (greater than ``after`` if given)."""
        if after is None:
            scan = self._pairs.irange(minimum=(first, ""))  # "" sorts before every second
        else:
            scan = self._pairs.irange(minimum=(first, after), inclusive=(False, True))
        return (pair[1] for pair in takewhile(lambda pair: pair[0] == first, scan))

    def __contains__(self, pair: object) -> bool:
        return pair in self._pairs  # type: ignore[operator]  # SortedList takes any object

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def load(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Fill an empty index (one sort)."""
        assert not self._pairs, "load fills an empty index"
        ordered = sorted(pairs)  # then drop adjacent repeats: a set() of 1M tuples costs 2 s
        unique = ordered[:1] + [b for a, b in pairwise(ordered) if a != b]
        self._pairs = SortedList(unique)  # sorted input: linear
