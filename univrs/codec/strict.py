"""Strict CBOR decoding of exactly one item, shared by Raft messages and plain data.

``load`` refuses (``ProtocolError``) oversized, empty or truncated input, trailing bytes,
indefinite-length items, duplicate map keys, invalid UTF-8, nesting beyond ``max_depth`` and
every CBOR tag: cbor2 decodes some tags natively (datetimes, bignums, sets, shared references
...) before any ``tag_hook`` sees them, so the decoder is also given a ``semantic_decoders``
mapping that answers *every* tag number with a rejecting callback. cbor2's own exceptions are
translated here, at the edge.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import cbor2

from univrs.errors import ProtocolError

__all__ = ["array_length", "load", "strict_decoder"]


class _TagRejected(Exception):
    pass


def _reject_semantic(value: object, immutable: bool) -> NoReturn:
    raise _TagRejected("CBOR tags are not allowed")


def _reject_tag(tag: cbor2.CBORTag, immutable: bool) -> NoReturn:
    raise _TagRejected(f"CBOR tag {tag.tag} is not allowed")


class _RejectAllTags(Mapping[int, Callable[[Any, bool], Any]]):
    """A ``semantic_decoders`` mapping that overrides every tag, built-in or not, with a refusal.

    cbor2 looks a tag number up in this mapping before using its built-in decoder for it, so no
    tag (datetime, bignum, set, shared reference, ...) can slip through.
    """

    def __getitem__(self, key: int) -> Callable[[Any, bool], Any]:
        return _reject_semantic

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_NO_TAGS = _RejectAllTags()


def strict_decoder(fp: io.BytesIO, *, max_depth: int) -> cbor2.CBORDecoder:
    """A decoder of items from ``fp`` with ``load``'s refusals (tags, indefinite lengths,
    duplicate keys, invalid UTF-8, nesting), for a reader that decodes a large frame item by
    item (a snapshot's rows: univrs/storage/sm_tables.py). Its failures are cbor2's own
    exceptions (or any other: a refused tag); the caller translates them."""
    return cbor2.CBORDecoder(
        fp,
        tag_hook=_reject_tag,
        semantic_decoders=_NO_TAGS,
        str_errors="strict",
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )


def load(data: bytes, *, max_size: int, max_depth: int, what: str) -> Any:
    """Decode exactly one CBOR item from ``data``; every failure is a ProtocolError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"{what}: expected bytes, got {type(data).__name__}")
    size = len(data)
    if size > max_size:
        raise ProtocolError(f"{what} of {size} bytes exceeds the limit of {max_size} bytes")
    if size == 0:
        raise ProtocolError(f"empty {what}")
    fp = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            fp,
            tag_hook=_reject_tag,
            semantic_decoders=_NO_TAGS,
            str_errors="strict",
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
        obj = decoder.decode()
    except cbor2.CBORDecodeEOF:
        raise ProtocolError(f"truncated {what} ({size} bytes)") from None
    except Exception as exc:  # translate every library failure at the edge
        raise ProtocolError(f"malformed {what}: {_reason(exc)}") from None
    end = fp.tell()
    if end != size:
        raise ProtocolError(f"{what} has {size - end} trailing bytes after the CBOR item")
    return obj


def array_length(data: bytes | bytearray | memoryview) -> int | None:
    """The item count in the head of ``data`` when it starts a definite-length CBOR array
    (major type 4), else None (another item, an indefinite array, or too short: ``load``
    judges those). Read before decoding, it lets a caller refuse a frame of too many items
    without building them: decoding a 4 MiB frame of 5-byte maps made 800,000 of them."""
    if not data:
        return None
    head = data[0]
    if head >> 5 != 4:
        return None
    info = head & 0x1F
    if info < 24:
        return info
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or len(data) < 1 + width:
        return None
    return int.from_bytes(data[1 : 1 + width], "big")


def _reason(exc: BaseException) -> str:
    seen: BaseException | None = exc
    for _ in range(8):  # bounded walk down the cause chain
        if seen is None:
            break
        if isinstance(seen, _TagRejected):
            return f"{seen} ({exc})"
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__
