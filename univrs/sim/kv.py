"""The simulation's state machine: a tiny key-value map fed by JSON-encoded writes.

Every write a simulated client proposes carries ``(client, op, key, value)`` and sets a value
unique to that operation, so a read can be traced back to the one write it observed. Only
``NORMAL`` entries carry writes; ``NOOP`` entries just advance ``applied``, and ``CONFIG``
entries set the configuration the store reflects (the simulated operator reads it to learn that
a membership change committed; a snapshot carries it in its metadata).
"""

from __future__ import annotations

import json

import attrs

from univrs.raft.messages import Entry, EntryKind, Membership, decode_membership

NO_MEMBERS = Membership(voters=frozenset())


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
    _configs: dict[bytes, Membership] = attrs.field(factory=dict)

    def write_of(self, entry: Entry) -> KvWrite | None:
        if entry.kind != EntryKind.NORMAL:
            return None
        w = self._cache.get(entry.data)
        if w is None:
            w = self._cache[entry.data] = decode_write(entry.data)
        return w

    def config_of(self, entry: Entry) -> Membership | None:
        """The configuration a CONFIG entry carries (None for other entries)."""
        if entry.kind != EntryKind.CONFIG:
            return None
        m = self._configs.get(entry.data)
        if m is None:
            m = self._configs[entry.data] = decode_membership(entry.data)
        return m


@attrs.define(eq=False)
class KvStore:
    """One node's in-memory state machine. Invariant: it reflects exactly entries 1..applied,
    and ``config`` is the configuration of the last CONFIG entry among them (at
    ``config_index``)."""

    applied: int = 0
    applied_term: int = 0  # term of the entry at ``applied`` (for snapshot metadata)
    data: dict[str, str] = attrs.field(factory=dict)
    config: Membership = NO_MEMBERS
    config_index: int = 0

    def apply(self, entry: Entry, write: KvWrite | None, config: Membership | None = None) -> None:
        # Entries are applied strictly in order; the simulator checks the index before calling.
        self.applied = entry.index
        self.applied_term = entry.term
        if write is not None:
            self.data[write.key] = write.value
        elif config is not None:
            self.config = config
            self.config_index = entry.index

    def snapshot(self) -> bytes:
        """The state as snapshot bytes (sorted JSON, identical on every replica).

        The configuration itself travels in the snapshot's metadata; the bytes keep the index of
        its entry, which the operator compares with the changes it proposed.
        """
        doc = {"cfg": self.config_index, "kv": self.data}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def restore(self, data: bytes, index: int, term: int, config: Membership) -> None:
        """Replace the state by a snapshot taken at (index, term) with configuration ``config``."""
        doc = json.loads(data)
        if not (isinstance(doc, dict) and isinstance(doc.get("kv"), dict)):
            raise ValueError(f"not a simulated snapshot: {data[:40]!r}")
        self.data = {str(k): str(v) for k, v in doc["kv"].items()}
        self.applied = index
        self.applied_term = term
        self.config = config
        self.config_index = int(doc["cfg"])

    def get(self, key: str) -> str | None:
        return self.data.get(key)
