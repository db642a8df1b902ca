"""The simulation's state machine: a tiny key-value map fed by JSON-encoded writes.

Every write a simulated client proposes carries ``(client, op, key, value)``: ``(client, op)``
is its unique id and ``value`` is unique to it, so a read can be traced back to the one write it
observed, and a write that takes effect twice is seen. A write is unconditional or
*conditional* (``cond``: set only if the key holds ``expect`` now, like an HTTP If-Match; else
the answer is ``conflict`` and nothing changes). A *keyed* write carries an idempotency key
(the client id and ``op`` as its sequence number): the store keeps each client's last keyed
result (its session, dissertation 6.3) and answers a duplicate with it, without applying it
again. Only ``NORMAL`` entries carry writes; ``NOOP`` entries just advance ``applied``, and
``CONFIG`` entries set the configuration the store reflects (the simulated operator reads it to
learn that a membership change committed; a snapshot carries it in its metadata).

Batch entries (like the node's payload version 2, univrs/runtime/payload.py): a ``NORMAL``
entry may carry several writes (``encode_batch``), applied in order at consecutive
*revisions* by the node's rule (univrs/sm/state.py): each write, and each entry without one,
takes revision ``max(last revision + 1, its entry's index)``. A write's result carries its
revision, the snapshot the last revision. The checker computes the revisions from the
committed log on its own (checker.py) and holds the answers to them.
"""

from __future__ import annotations

import json

import attrs

from univrs.raft.messages import Entry, EntryKind, Membership, SnapshotMeta, decode_membership

NO_MEMBERS = Membership(voters=frozenset())


@attrs.frozen(kw_only=True, slots=True)
class KvWrite:
    """One client write: set ``key`` to ``value`` (unique per operation), if ``cond`` only
    when the key holds ``expect`` (None: absent); ``keyed``: with an idempotency key."""

    client: int
    op: int
    key: str
    value: str
    keyed: bool = False
    cond: bool = False
    expect: str | None = None

    @property
    def wid(self) -> tuple[int, int]:
        """The write's unique id."""
        return (self.client, self.op)


# A write's result: ("ok" | "conflict", the revision it was first applied at).
KvResult = tuple[str, int]
OK = "ok"
CONFLICT = "conflict"


def encode_write(w: KvWrite) -> bytes:
    """The bytes a client proposes for ``w`` (compact JSON, stable across runs)."""
    doc = [w.client, w.op, w.key, w.value, int(w.keyed), int(w.cond), w.expect]
    return json.dumps(doc, separators=(",", ":")).encode()


BATCH_MARK = b"B"  # a batch entry's bytes: this mark, then a JSON list of write documents


def encode_batch(payloads: list[bytes]) -> bytes:
    """The bytes of a batch entry carrying these writes (each ``encode_write``'s), in order."""
    return BATCH_MARK + b"[" + b",".join(payloads) + b"]"


def decode_writes(data: bytes) -> tuple[KvWrite, ...]:
    """The writes an entry's bytes carry: one, or a batch's (``encode_batch``)."""
    if data.startswith(BATCH_MARK):
        docs = json.loads(data[len(BATCH_MARK) :])
        if not (isinstance(docs, list) and docs):
            raise ValueError(f"not a simulated batch: {data[:40]!r}")
        return tuple(_write_from_doc(doc) for doc in docs)
    return (decode_write(data),)


def decode_write(data: bytes) -> KvWrite:
    """Inverse of encode_write; raises ValueError on bytes no simulated client wrote."""
    return _write_from_doc(json.loads(data))


def _write_from_doc(doc: object) -> KvWrite:
    if not (isinstance(doc, list) and len(doc) == 7):
        raise ValueError(f"not a simulated write: {doc!r}")
    client, op, key, value, keyed, cond, expect = doc
    return KvWrite(
        client=int(client),
        op=int(op),
        key=str(key),
        value=str(value),
        keyed=bool(keyed),
        cond=bool(cond),
        expect=None if expect is None else str(expect),
    )


@attrs.define(eq=False)
class WriteDecoder:
    """Decodes entry payloads once per distinct payload (all replicas share the bytes)."""

    _cache: dict[bytes, tuple[KvWrite, ...]] = attrs.field(factory=dict)
    _configs: dict[bytes, Membership] = attrs.field(factory=dict)

    def writes_of(self, entry: Entry) -> tuple[KvWrite, ...]:
        """The writes a NORMAL entry carries (none for other entries)."""
        if entry.kind != EntryKind.NORMAL:
            return ()
        ws = self._cache.get(entry.data)
        if ws is None:
            ws = self._cache[entry.data] = decode_writes(entry.data)
        return ws

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
    revision: int = 0  # of the last write or entry applied (see the module docstring)
    data: dict[str, str] = attrs.field(factory=dict)
    config: Membership = NO_MEMBERS
    config_index: int = 0
    # Client -> (op, result, revision) of its last keyed write (the session).
    sessions: dict[int, tuple[int, str, int]] = attrs.field(factory=dict)

    def apply(
        self,
        entry: Entry,
        writes: tuple[KvWrite, ...] = (),
        config: Membership | None = None,
    ) -> list[tuple[KvResult | None, bool]]:
        """Apply the next entry: for each write it carries (or once, for an entry without
        one), the write's result (None: not a write) and whether it took effect now."""
        # Entries are applied strictly in order; the simulator checks the index before calling.
        self.applied = entry.index
        self.applied_term = entry.term
        if not writes:
            self._next_revision()
            if config is not None:
                self.config = config
                self.config_index = entry.index
            return [(None, False)]
        return [self._write(w, self._next_revision()) for w in writes]

    def _next_revision(self) -> int:
        self.revision = max(self.revision + 1, self.applied)
        return self.revision

    def _write(self, write: KvWrite, revision: int) -> tuple[KvResult | None, bool]:
        if write.keyed:
            last = self.sessions.get(write.client)
            if last is not None and write.op <= last[0]:
                # A duplicate of a keyed write: the first result, nothing applied again (a
                # write older than the session's last is answered like the last: the simulated
                # clients run one operation at a time, so it cannot happen).
                return (last[1], last[2]), False
        data = self.data
        if write.cond and data.get(write.key) != write.expect:
            result: KvResult = (CONFLICT, revision)
        else:
            data[write.key] = write.value
            result = (OK, revision)
        if write.keyed:
            self.sessions[write.client] = (write.op, result[0], revision)
        return result, result[0] == OK

    def snapshot(self) -> bytes:
        """The state as snapshot bytes (sorted JSON, identical on every replica).

        The configuration itself travels in the snapshot's metadata; the bytes keep the index of
        its entry, which the operator compares with the changes it proposed.
        """
        sessions = {str(c): list(v) for c, v in self.sessions.items()}
        doc = {"cfg": self.config_index, "kv": self.data, "sessions": sessions}
        if self.revision != self.applied:  # as the node's: only once batch entries applied
            doc["rev"] = self.revision
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def check_snapshot(meta: SnapshotMeta, data: bytes) -> str | None:
        """Can ``restore`` take ``data``? None if so, else why not (the core's snapshot_check)."""
        try:
            KvStore().restore(data, meta.index, meta.term, meta.membership)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return f"not a simulated snapshot: {exc}"
        return None

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
        self.revision = int(doc.get("rev", index))
        self.sessions = {
            int(c): (int(op), str(res), int(i)) for c, (op, res, i) in doc["sessions"].items()
        }

    def get(self, key: str) -> str | None:
        return self.data.get(key)
