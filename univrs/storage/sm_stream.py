"""A snapshot's bytes read as a stream: its top-level map walked with the strict decoder, the
object rows handed on one at a time (``streamed_plain``), so a restore into LMDB holds one row,
not the state.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

from univrs import codec
from univrs.codec.strict import strict_decoder
from univrs.errors import ProtocolError

_ROW_KEYS = ("workloads", "instances", "nodes")
MAX_SNAPSHOT_BYTES = 1 << 34  # as univrs.runtime.snapshots.MAX_SNAPSHOT_BYTES
_ROW_DEPTH = 63  # a row sits one level below the snapshot's map (``restore``'s max_depth 64)


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
        decoder = strict_decoder(fp, max_depth=_ROW_DEPTH)
        for n in range(count):
            try:
                row = decoder.decode()
            except Exception as exc:
                raise ProtocolError(f"snapshot row {n} at byte {fp.tell()}: {exc}") from None
            yield row

    return rows


def streamed_plain(data: bytes) -> dict[str, Any] | None:
    r"""A snapshot's top-level map with its object row lists as ``RowStream``\ s (rows decoded
    one at a time when read), the other values decoded strictly (``codec.decode_plain``); None
    when the data is not laid out so (not a definite map of str keys with definite row arrays,
    trailing bytes, any decoding error): the caller decodes it whole and gets the error there.

    This pass decodes each row once to find where the next key starts, and drops it: memory
    stays one row, not the state."""
    from univrs.sm.snapshot_read import RowStream

    fp = io.BytesIO(data)
    decoder = strict_decoder(fp, max_depth=_ROW_DEPTH)
    try:
        head = _read_head(fp)
        if head is None or head[0] != 5:
            return None
        plain: dict[str, Any] = {}
        for _ in range(head[1]):
            key = decoder.decode()
            if type(key) is not str or key in plain:
                return None
            if key in _ROW_KEYS:
                rows = _read_head(fp)
                if rows is None or rows[0] != 4:
                    return None
                offset, count = fp.tell(), rows[1]
                for _ in range(count):
                    decoder.decode()
                plain[key] = RowStream(count, _rows(data, offset, count))
            else:
                start = fp.tell()
                decoder.decode()
                plain[key] = codec.decode_plain(
                    data[start : fp.tell()], max_size=MAX_SNAPSHOT_BYTES, max_depth=64
                )
        if fp.tell() != len(data):
            return None
    except Exception:
        return None
    return plain
