"""A snapshot's bytes read as a stream: its top-level map walked with the strict decoder
(``walk_plain``), the object rows handed on one at a time (``streamed_plain``), so a restore
into LMDB holds one row, not the state. The one-pass staging (``sm_ingest.staged_plain``)
walks the map with the same walker, storing the rows as they come.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import cbor2

from univrs import codec
from univrs.codec.strict import strict_decoder
from univrs.errors import ProtocolError

_ROW_KEYS = ("workloads", "instances", "nodes")
MAX_SNAPSHOT_BYTES = 1 << 34  # as univrs.runtime.snapshots.MAX_SNAPSHOT_BYTES
_ROW_DEPTH = 63  # a row sits one level below the snapshot's map (``restore``'s max_depth 64)
# What the decoder reads ahead per item (``strict_decoder``): a row is 50 to 200 bytes; cbor2's
# 4,096 made each row's decode copy 4 KiB (25 % of the decode of a workload row, s14-join).
_ROW_READ = 512


def _read_head(fp: io.BytesIO) -> tuple[int, int] | None:
    """A definite CBOR head (major type, length or value); None for anything else."""
    first = fp.read(1)
    if not first:
        return None
    major, info = first[0] >> 5, first[0] & 31
    if info < 24:
        return major, info
    size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if size is None:
        return None
    raw = fp.read(size)
    return (major, int.from_bytes(raw, "big")) if len(raw) == size else None


def _rows(data: bytes, offset: int, count: int) -> Callable[[], Iterator[Any]]:
    def rows() -> Iterator[Any]:
        fp = io.BytesIO(data)  # shares the bytes (no copy until written)
        fp.seek(offset)
        decoder = strict_decoder(fp, max_depth=_ROW_DEPTH, read_size=_ROW_READ)
        for n in range(count):
            try:
                row = decoder.decode()
            except Exception as exc:
                raise ProtocolError(f"snapshot row {n} at byte {fp.tell()}: {exc}") from None
            yield row

    return rows


class NotLaidOut(Exception):
    """The snapshot's top level is not a definite map of str keys with definite row arrays,
    followed by nothing (``walk_plain``): the caller decodes it another way."""


RowsReader = Callable[[str, int, cbor2.CBORDecoder, dict[str, Any]], Any]
"""What ``walk_plain`` calls at a row key: ``(key, count, decoder, plain)``, the decoder at
the key's first row, ``plain`` the keys before it; it reads exactly ``count`` rows and returns
the key's value in the plain map."""


def walk_plain(data: bytes, read_rows: RowsReader) -> dict[str, Any]:
    """Walk snapshot ``data``'s top-level map once: each object row list is handed to
    ``read_rows``, every other value is decoded strictly, as ``codec.decode_plain`` decodes it
    (once: the item the walk decodes is checked in place). Raises ``NotLaidOut``, a decoding
    error, or what ``read_rows`` raises."""
    fp = io.BytesIO(data)
    decoder = strict_decoder(fp, max_depth=_ROW_DEPTH, read_size=_ROW_READ)
    head = _read_head(fp)
    if head is None or head[0] != 5:
        raise NotLaidOut
    plain: dict[str, Any] = {}
    for _ in range(head[1]):
        key = decoder.decode()
        if type(key) is not str or key in plain:
            raise NotLaidOut
        if key in _ROW_KEYS:
            rows = _read_head(fp)
            if rows is None or rows[0] != 4:
                raise NotLaidOut
            plain[key] = read_rows(key, rows[1], decoder, plain)
        else:
            # The decoder refuses what ``decode_plain`` (max_depth 64) refuses, one level
            # shallower here as in the map; what is left is the plain data check.
            value = decoder.decode()
            codec.check_plain(value, max_depth=64)
            plain[key] = value
    if fp.tell() != len(data):
        raise NotLaidOut
    return plain


def _row_streams(data: bytes) -> RowsReader:
    """``data``'s row lists as ``RowStream`` values: each row decoded once here, to find where the
    next key starts, and dropped."""
    from univrs.sm.snapshot_read import RowStream

    def read_rows(key: str, count: int, decoder: cbor2.CBORDecoder, plain: object) -> Any:
        offset = decoder.fp.tell()
        for _ in range(count):
            decoder.decode()
        return RowStream(count, _rows(data, offset, count))

    return read_rows


def streamed_plain(data: bytes) -> dict[str, Any] | None:
    r"""A snapshot's top-level map with its object row lists as ``RowStream``\ s (rows decoded
    one at a time when read), the other values decoded strictly (``codec.decode_plain``); None
    when the data is not laid out so (not a definite map of str keys with definite row arrays,
    trailing bytes, any decoding error): the caller decodes it whole and gets the error there.

    This pass decodes each row once to find where the next key starts, and drops it: memory
    stays one row, not the state."""
    try:
        return walk_plain(data, _row_streams(data))
    except Exception:
        return None
