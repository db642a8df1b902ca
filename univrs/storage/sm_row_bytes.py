"""A stored workload's snapshot row as CBOR bytes, encoded once per object, and a scale's row
spliced from its previous version's bytes (issue 14, round 18, s18-apply).

Every node applies every write; a scale makes a new ``StoredWorkload`` whose row
(``snapshot._workload_row``) goes to the state's LMDB table as CBOR (its value there) and to
the watch history twice (the "after" of its revision, the "before" of the next change of that
workload: univrs/sm/captured.py). Building the row of about 14 items and encoding it was about
1.5 µs a scale on every node, a third of the state table's put and of the history's form.

``workload_bytes(w)`` is ``cbor2.dumps(_workload_row(w))``, the same bytes, made so:

* a hit: ``w`` is one of the last two objects of its id asked about (identity: a stored
  workload is immutable, so its bytes never change); their bytes are returned;
* a splice: ``w`` differs from the newest cached object of its id only in its version and its
  spec's replicas (every other field the very same object: ``model.with_replicas`` copies the
  spec's fields by reference, and a scale keeps the id and created index), both plain
  non-negative ``int``. A CBOR array is its head followed by its items' encodings, so the row's
  bytes are ``prefix + uint(version) + mid + uint(replicas) + tail``, and only the two integers
  are encoded (CBOR's shortest form, as cbor2 writes them);
* anything else (a new id, an update's new spec, an object built elsewhere, e.g. another
  replica's in the same process): the row built and encoded, and split for the next splice.

Bounded like the row cache it replaces: ``ROWS_CACHED`` ids, emptied when full.
tests/storage/test_row_bytes.py checks the bytes against ``cbor2.dumps(_workload_row(w))``.
"""

from __future__ import annotations

import struct

import cbor2

from univrs.sm.objects import StoredWorkload
from univrs.sm.snapshot import _workload_row

ROWS_CACHED = 4096

# By id: (newest object, its bytes, its parts or None, the object before it, its bytes).
# Parts: (prefix, mid, tail) such that bytes == prefix + uint(version) + mid +
# uint(replicas) + tail (None when its version or replicas is not a plain uint).
_Parts = tuple[bytes, bytes, bytes]
_Entry = tuple[StoredWorkload, bytes, "_Parts | None", "StoredWorkload | None", "bytes | None"]
_BYTES: dict[str, _Entry] = {}


def cbor_uint(value: int) -> bytes:
    """CBOR's shortest encoding of the unsigned integer ``value`` (major type 0), as cbor2
    writes it (also the journal's answer rows: univrs/storage/sm_journal.py)."""
    if value < 24:
        return bytes((value,))
    if value < 0x100:
        return bytes((0x18, value))
    if value < 0x10000:
        return b"\x19" + value.to_bytes(2, "big")
    if value < 0x100000000:
        return b"\x1a" + value.to_bytes(4, "big")
    return b"\x1b" + value.to_bytes(8, "big")


_U64 = 1 << 64
# ``cbor_uint(v)`` for 0x10000 <= v < 0x100000000: ``_UINT32(0x1A, v)``
_UINT32 = struct.Struct(">BI").pack
# ``cbor_uint(v)`` for v < 0x100
_UINT8 = [bytes((v,)) if v < 24 else bytes((0x18, v)) for v in range(0x100)]


def _plain_uint(value: object) -> bool:
    return type(value) is int and 0 <= value < _U64


def _encoded(w: StoredWorkload) -> tuple[bytes, _Parts | None]:
    """The row's bytes built and encoded, and their parts (see ``_BYTES``)."""
    row = _workload_row(w)
    data = cbor2.dumps(row)
    version, replicas = row[1], row[5]
    if not (_plain_uint(version) and _plain_uint(replicas)):
        return data, None
    dumps = cbor2.dumps
    # the array's head and the id; then the version; created index, name, image; replicas
    at_version = _head_size(len(row)) + len(dumps(row[0]))
    v = cbor_uint(version)
    mid_start = at_version + len(v)
    mid_size = len(dumps(row[2])) + len(dumps(row[3])) + len(dumps(row[4]))
    at_replicas = mid_start + mid_size
    r = cbor_uint(replicas)
    if data[at_version:mid_start] != v or data[at_replicas : at_replicas + len(r)] != r:
        return data, None  # not laid out as expected: never spliced (cannot happen)
    parts = (data[:at_version], data[mid_start:at_replicas], data[at_replicas + len(r) :])
    return data, parts


def _head_size(n: int) -> int:
    """Bytes of the CBOR head of an array of ``n`` items."""
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5


def workload_bytes(w: StoredWorkload) -> bytes:
    """``cbor2.dumps(_workload_row(w))`` (see the module docstring): the stored workload's
    snapshot row in CBOR, as the state's table stores it."""
    ident = w.id
    hit = _BYTES.get(ident)
    if hit is not None:
        newest, data, parts, older, older_data = hit
        if newest is w:
            return data
        if older is w:
            return older_data  # type: ignore[return-value]
        if parts is not None:
            # Does ``w`` differ from ``newest`` only in its version and its spec's replicas
            # (every other field the very same object), both plain uints? (s30: written out)
            s, b = w.spec, newest.spec
            version, replicas = w.version, s.replicas
            if (
                w.created_index is newest.created_index
                and s.name is b.name
                and s.image is b.image
                and s.args is b.args
                and s.env is b.env
                and s.labels is b.labels
                and s.resources is b.resources
                and s.ports is b.ports
                and type(version) is int
                and 0 <= version < _U64
                and type(replicas) is int
                and 0 <= replicas < _U64
            ):
                prefix, mid, tail = parts
                r = _UINT8[replicas] if replicas < 0x100 else cbor_uint(replicas)
                # ``cbor_uint(version)``: a version (an index) is most often a 4-byte uint,
                # its head and bytes packed in one call; one join, not four concatenations
                # (s31: every scale's row)
                four = 0x10000 <= version < 0x100000000
                v = _UINT32(0x1A, version) if four else cbor_uint(version)
                data = b"".join((prefix, v, mid, r, tail))
                _BYTES[ident] = (w, data, parts, newest, hit[1])
                return data
    data, parts = _encoded(w)
    if len(_BYTES) >= ROWS_CACHED:
        _BYTES.clear()
        hit = None
    _BYTES[ident] = (w, data, parts, *(hit[:2] if hit is not None else (None, None)))
    return data


def cached() -> dict[str, _Entry]:
    """The cache itself, to be read only (``_BYTES``: by id, (newest object, its bytes, its
    parts, the object before it, its bytes)); always the same dict, emptied in place. The watch
    history's encode of a scale reads the bytes of its two objects in one look-up
    (``WatchHub.applied_many``: the state's table put the newer one just before)."""
    return _BYTES


def forget() -> None:
    """Empty the cache (tests)."""
    _BYTES.clear()


__all__ = ["ROWS_CACHED", "cached", "cbor_uint", "forget", "workload_bytes"]
