"""The simulation's state machine: a tiny key-value map fed by JSON-encoded writes.

Every write a simulated client proposes carries ``(client, op, key, value)`` and sets a value
unique to that operation, so a read can be traced back to the one write it observed. Only
``NORMAL`` entries carry writes; ``NOOP`` and ``CONFIG`` entries just advance ``applied``.
"""

from __future__ import annotations

import json

import attrs

from univrs.raft.messages import Entry, EntryKind


@attrs.frozen(kw_only=True, slots=True)
class KvWrite:
    """One client write: set ``key`` to ``value`` (unique per operation)."""

    client: int
    op: int
    key: str
    value: str


def encode_write(w: KvWrite) -> bytes:
    """The bytes a client proposes for ``w`` (compact JSON, stable across runs)."""
    return json.dumps([w.client, w.op, w.key, w.value], separators=(",", ":")).encode()


def decode_write(data: bytes) -> KvWrite:
    """Inverse of encode_write; raises ValueError on bytes no simulated client wrote."""
    doc = json.loads(data)
    if not (isinstance(doc, list) and len(doc) == 4):
        raise ValueError(f"not a simulated write: {data!r}")
    client, op, key, value = doc
    return KvWrite(client=int(client), op=int(op), key=str(key), value=str(value))


@attrs.define(eq=False)
class WriteDecoder:
    """Decodes entry payloads once per distinct payload (all replicas share the bytes)."""

    _cache: dict[bytes, KvWrite] = attrs.field(factory=dict)

    def write_of(self, entry: Entry) -> KvWrite | None:
        if entry.kind != EntryKind.NORMAL:
            return None
        w = self._cache.get(entry.data)
        if w is None:
            w = self._cache[entry.data] = decode_write(entry.data)
        return w


@attrs.define(eq=False)
class KvStore:
    """One node's in-memory state machine. Invariant: it reflects exactly entries 1..applied."""

    applied: int = 0
    applied_term: int = 0  # term of the entry at ``applied`` (for snapshot metadata)
    data: dict[str, str] = attrs.field(factory=dict)

    def apply(self, entry: Entry, write: KvWrite | None) -> None:
        # Entries are applied strictly in order; the simulator checks the index before calling.
        self.applied = entry.index
        self.applied_term = entry.term
        if write is not None:
            self.data[write.key] = write.value

    def snapshot(self) -> bytes:
        """The state as snapshot bytes (sorted JSON, identical on every replica)."""
        return json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()

    def restore(self, data: bytes, index: int, term: int) -> None:
        """Replace the state by a snapshot taken at (index, term)."""
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError(f"not a simulated snapshot: {data[:40]!r}")
        self.data = {str(k): str(v) for k, v in doc.items()}
        self.applied = index
        self.applied_term = term

    def get(self, key: str) -> str | None:
        return self.data.get(key)
