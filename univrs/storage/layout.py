"""The on-disk byte layout of the log store (see docs/storage.md); pure functions, no LMDB.

Every stored value carries a CRC-32 that covers its key and its payload, so a flipped bit, a
torn page or a value written under the wrong key is detected when it is read. Decoders raise
:class:`Corrupt`; the store turns that into a ``StorageError`` naming the file.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from typing import Any

from univrs.codec import decode_plain, encode_plain, membership_from_plain, membership_to_plain
from univrs.errors import ProtocolError
from univrs.raft.messages import Entry, EntryKind, HardState, SnapshotMeta

FORMAT_VERSION = 1
"""Bumped on any incompatible change of this layout; a store refuses a newer format."""

# Named LMDB databases inside the environment.
DB_META = b"meta"  # small records below, each a checked CBOR value
DB_LOG = b"log"  # index (8 bytes big-endian) -> checked entry
DB_SNAP = b"snapshot"  # chunk number (8 bytes big-endian) -> checked chunk of snapshot data

# Keys in DB_META.
KEY_FORMAT = b"format"  # FORMAT_VERSION as a CBOR int
KEY_IDENTITY = b"identity"  # [node_id, cluster_id | None, incarnation]
KEY_HARD_STATE = b"hard_state"  # [term, vote | None, commit]
# [[member id, incarnation], ...] sorted: HardState.pins, written in the same transaction as
# the hard state whenever they changed; absent: none. A key of its own, so that a store with
# pins still reads with a build from before them (which ignores it and forgets the pins).
KEY_PINS = b"pins"
# [member id, ...] sorted: HardState.named (the ids of configurations compaction or a
# snapshot's install folded away), written like the pins whenever it grew; absent: none. A key
# of its own for the same reason (a build from before it ignores it: it then hears fewer ids).
KEY_NAMED = b"named"
# [index, term, membership, size, chunks, crc32 of the data(, first | file name)]: see
# ``snapshot_record``.
KEY_SNAPSHOT = b"snapshot"

OVERFLOW_HEADER = 16
"""Bytes of LMDB's page header on an overflow page (PAGEHDRSZ, 64-bit builds)."""


def snapshot_chunk_size(page_size: int) -> int:
    """Snapshot data is split into values of this many bytes (the last one may be shorter).

    A value larger than about half a page lives on overflow pages, which LMDB allocates as one
    contiguous run; a free run long enough is rarely found once log churn has fragmented the
    free pages, so every new snapshot made ``data.mdb`` grow (see docs/storage.md, "Space").
    A chunk whose value (CRC + data) fills exactly one overflow page needs no run at all: any
    free page does. Readers do not depend on the chunk size (stores written with 1 MiB chunks
    read the same).
    """
    return page_size - OVERFLOW_HEADER - 4  # the value's CRC-32 takes 4 bytes


_MAX_RECORD = 1 << 24

_INDEX = struct.Struct(">Q")
# Entry value: crc32 of (key + value[4:]), term, kind, then the raw entry data.
_ENTRY_HEADER = struct.Struct(">IQB")
_TERM_KIND = struct.Struct(">QB")
_CRC = struct.Struct(">I")

_KINDS = {k.value: k for k in EntryKind}


class Corrupt(Exception):
    """A stored value failed its checksum or does not parse; the text says which one."""


def index_key(index: int) -> bytes:
    """The key of a log entry (or snapshot chunk): big-endian, so cursor order is index order."""
    return _INDEX.pack(index)


def key_index(key: bytes) -> int:
    if len(key) != 8:
        raise Corrupt(f"log key {key.hex()} is not 8 bytes")
    index: int = _INDEX.unpack(key)[0]
    return index


def encode_entry(entry: Entry) -> bytes:
    key = _INDEX.pack(entry.index)
    body = _TERM_KIND.pack(entry.term, entry.kind.value) + entry.data
    return _CRC.pack(zlib.crc32(body, zlib.crc32(key))) + body


def decode_entry(key: bytes, value: bytes) -> Entry:
    index, term, kind = _checked_entry(key, value)
    return Entry(term=term, index=index, kind=_KINDS[kind], data=value[_ENTRY_HEADER.size :])


def entry_term(key: bytes, value: bytes) -> int:
    """``decode_entry(key, value).term``, checked alike, without building the entry (the
    term of the entry before an append, read on every write)."""
    return _checked_entry(key, value)[1]


def _checked_entry(key: bytes, value: bytes) -> tuple[int, int, int]:
    """(index, term, kind value) of a stored entry whose checksum and fields are valid."""
    index = key_index(key)
    if len(value) < _ENTRY_HEADER.size:
        raise Corrupt(f"log entry {index}: value of {len(value)} bytes is too short")
    crc, term, kind = _ENTRY_HEADER.unpack_from(value)
    if zlib.crc32(value[4:], zlib.crc32(key)) != crc:
        raise Corrupt(f"log entry {index}: checksum mismatch")
    if kind not in _KINDS or term < 1 or index < 1:
        raise Corrupt(f"log entry {index}: invalid term {term} or kind {kind}")
    return index, term, kind


def encode_chunk(number: int, data: bytes | memoryview) -> bytes:
    return _CRC.pack(zlib.crc32(data, zlib.crc32(_INDEX.pack(number)))) + bytes(data)


def decode_chunk(number: int, value: bytes) -> bytes:
    if (
        len(value) < 4
        or zlib.crc32(value[4:], zlib.crc32(_INDEX.pack(number))) != (_CRC.unpack_from(value)[0])
    ):
        raise Corrupt(f"snapshot chunk {number}: checksum mismatch")
    return value[4:]


def encode_record(key: bytes, obj: Any) -> bytes:
    body = encode_plain(obj)
    return _CRC.pack(zlib.crc32(body, zlib.crc32(key))) + body


def decode_record(key: bytes, value: bytes) -> Any:
    name = key.decode(errors="replace")
    if len(value) < 4 or zlib.crc32(value[4:], zlib.crc32(key)) != _CRC.unpack_from(value)[0]:
        raise Corrupt(f"metadata record {name!r}: checksum mismatch")
    try:
        return decode_plain(value[4:], max_size=_MAX_RECORD)
    except ProtocolError as exc:
        raise Corrupt(f"metadata record {name!r}: {exc}") from None


def _is_uint(value: Any) -> bool:
    return type(value) is int and value >= 0


def identity_record(node_id: str, cluster_id: str | None, incarnation: str) -> list[Any]:
    return [node_id, cluster_id, incarnation]


def parse_identity(obj: Any) -> tuple[str, str | None, str | None]:
    """(node id, cluster id, incarnation). A store written before incarnations existed has a
    two-item record: its incarnation is None (the store adds one when it opens)."""
    if (
        type(obj) is not list
        or len(obj) not in (2, 3)
        or type(obj[0]) is not str
        or not (obj[1] is None or type(obj[1]) is str)
        or (len(obj) == 3 and (type(obj[2]) is not str or not obj[2]))
    ):
        raise Corrupt("metadata record 'identity': malformed")
    return obj[0], obj[1], (obj[2] if len(obj) == 3 else None)


def hard_state_record(hs: HardState) -> list[Any]:
    return [hs.term, hs.vote, hs.commit]


def parse_hard_state(obj: Any) -> HardState:
    if (
        type(obj) is not list
        or len(obj) != 3
        or not _is_uint(obj[0])
        or not (obj[1] is None or type(obj[1]) is str)
        or not _is_uint(obj[2])
    ):
        raise Corrupt("metadata record 'hard_state': malformed")
    return HardState(term=obj[0], vote=obj[1], commit=obj[2])


def pins_record(pins: tuple[tuple[str, str], ...]) -> list[Any]:
    return [[node, incarnation] for node, incarnation in pins]


def parse_pins(obj: Any) -> tuple[tuple[str, str], ...]:
    """``HardState.pins`` from its record: sorted, unique ids, non-empty strings."""
    if type(obj) is not list:
        raise Corrupt("metadata record 'pins': malformed")
    out: list[tuple[str, str]] = []
    for item in obj:
        if (
            type(item) is not list
            or len(item) != 2
            or type(item[0]) is not str
            or type(item[1]) is not str
            or not item[0]
            or not item[1]
        ):
            raise Corrupt("metadata record 'pins': malformed")
        out.append((item[0], item[1]))
    if any(a[0] >= b[0] for a, b in itertools.pairwise(out)):
        raise Corrupt("metadata record 'pins': ids not sorted and unique")
    return tuple(out)


def named_record(named: tuple[str, ...]) -> list[Any]:
    return list(named)


def parse_named(obj: Any) -> tuple[str, ...]:
    """``HardState.named`` from its record: sorted, unique, non-empty strings."""
    if type(obj) is not list or any(type(x) is not str or not x for x in obj):
        raise Corrupt("metadata record 'named': malformed")
    if any(a >= b for a, b in itertools.pairwise(obj)):
        raise Corrupt("metadata record 'named': ids not sorted and unique")
    return tuple(obj)


def snapshot_record(
    meta: SnapshotMeta, *, size: int, chunks: int, crc: int, first: int = 0, file: str | None = None
) -> list[Any]:
    """The ``snapshot`` record: where the stored snapshot's data is and what it holds.

    * Chunks of the ``snap`` database at keys ``first`` to ``first + chunks - 1``. ``first`` is
      0 for a snapshot stored in one transaction (``save_snapshot``: the record then has the
      six fields it always had); a seventh field, an integer, for one that a build of the tenth
      increment of docs/state-at-scale.md stored in parts.
    * A file of its own beside ``data.mdb`` (``file``: its name, a text string as the seventh
      field; ``chunks`` is its blocks' count, see univrs/storage/snapshot_file.py): a node's
      own snapshot, written and synced off the storage writer's queue. A build that reads only
      the forms above refuses this one ("metadata record 'snapshot': malformed")."""
    # The membership takes the codec's plain form, so both follow Membership together.
    record = [meta.index, meta.term, membership_to_plain(meta.membership), size, chunks, crc]
    if file is not None:
        if not is_snapshot_file_name(file):
            raise ValueError(f"not a snapshot file name: {file!r}")
        return [*record, file]
    return record if first == 0 else [*record, first]


SNAPSHOT_FILE_PREFIX = "snapshot-"
SNAPSHOT_FILE_SUFFIX = ".dat"
_HEX = frozenset("0123456789abcdef")


def snapshot_file_name(meta: SnapshotMeta, token: str) -> str:
    """The name of a snapshot file: its index and term (for a reader of the directory) and a
    random ``token`` (8 hex digits), so that no two saves ever write the same file."""
    return f"{SNAPSHOT_FILE_PREFIX}{meta.index:016x}-{meta.term:016x}-{token}{SNAPSHOT_FILE_SUFFIX}"


def is_snapshot_file_name(name: str) -> bool:
    """A name ``snapshot_file_name`` gives (no path separator, nothing else)."""
    if not (name.startswith(SNAPSHOT_FILE_PREFIX) and name.endswith(SNAPSHOT_FILE_SUFFIX)):
        return False
    body = name[len(SNAPSHOT_FILE_PREFIX) : -len(SNAPSHOT_FILE_SUFFIX)].split("-")
    return [len(p) for p in body] == [16, 16, 8] and all(set(p) <= _HEX for p in body)


def parse_snapshot(obj: Any) -> tuple[SnapshotMeta, int, int, int, int]:
    """Returns (meta, size, chunks, crc32 of the whole data, key of the first chunk); the key
    is 0 for a record naming a file (``snapshot_file``)."""
    if type(obj) is not list or len(obj) not in (6, 7):
        raise Corrupt("metadata record 'snapshot': malformed")
    index, term, membership, size, chunks, crc = obj[:6]
    first = obj[6] if len(obj) == 7 and type(obj[6]) is not str else 0
    if len(obj) == 7 and type(obj[6]) is str and not is_snapshot_file_name(obj[6]):
        raise Corrupt("metadata record 'snapshot': bad file name")
    if not all(_is_uint(v) for v in (index, term, size, chunks, crc, first)):
        raise Corrupt("metadata record 'snapshot': malformed")
    if first + chunks >= 1 << 64:
        raise Corrupt("metadata record 'snapshot': chunk keys out of range")
    try:
        meta = SnapshotMeta(index=index, term=term, membership=membership_from_plain(membership))
    except ProtocolError as exc:
        raise Corrupt(f"metadata record 'snapshot': {exc}") from None
    return meta, size, chunks, crc, first


def snapshot_file(obj: Any) -> str | None:
    """The file a (well-formed) ``snapshot`` record names; None: its data is in chunks."""
    if type(obj) is list and len(obj) == 7 and type(obj[6]) is str:
        return str(obj[6])
    return None
