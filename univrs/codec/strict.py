"""Strict CBOR decoding of exactly one item, shared by Raft messages and plain data.

``load`` refuses (``ProtocolError``) oversized, empty or truncated input, trailing bytes,
indefinite-length items, duplicate map keys, invalid UTF-8, nesting beyond ``max_depth``, more than
``max_items`` items (when given) and every CBOR tag: cbor2 decodes some tags natively (datetimes,
bignums, sets, shared references ...) before any ``tag_hook`` sees them, so the decoder is also
given a ``semantic_decoders`` mapping that answers *every* tag number with a rejecting callback.
cbor2's own exceptions are translated here, at the edge.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import cbor2

from univrs.errors import ProtocolError

__all__ = ["MAX_FRAME_ITEMS", "array_length", "check_item_count", "load", "strict_decoder"]

MAX_FRAME_ITEMS = 1 << 20
"""The most CBOR items (every head: scalars, strings, arrays, maps and their keys) one frame
from the network may hold (raft frames, fast-protocol request frames). cbor2 has no such bound:
4 MiB of empty maps decoded to 4 million dicts, 300 MB (tracemalloc peak) for one frame. At
this bound a hostile frame costs at most about 75 MB while decoded (the densest form, empty
maps in an array: 64 + 8 bytes each), no more than a legitimate 4 MiB frame of small
structured items costs anyway. The densest legitimate raft frame, 256 AppendEntries
(``MAX_BATCH_MESSAGES``) of 512 entries each (``RaftConfig.max_entries_per_msg``) at 5 items
an entry, is 660,000 items (tests/test_codec_limits.py encodes and decodes it)."""


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


def load(
    data: bytes, *, max_size: int, max_depth: int, what: str, max_items: int | None = None
) -> Any:
    """Decode exactly one CBOR item from ``data``; every failure is a ProtocolError. With
    ``max_items``, a frame of more items is refused before cbor2 builds any of them
    (``check_item_count``)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"{what}: expected bytes, got {type(data).__name__}")
    size = len(data)
    if size > max_size:
        raise ProtocolError(f"{what} of {size} bytes exceeds the limit of {max_size} bytes")
    if size == 0:
        raise ProtocolError(f"empty {what}")
    if max_items is not None and size > max_items:
        # Every item takes a byte at least: a frame no longer than the bound is within it.
        check_item_count(data, max_items, what)
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


def _item_steps() -> tuple[int, ...]:
    """Per initial byte of a CBOR item: how far its next item's head is. Heads of integers,
    simple values, floats, tags, arrays and maps are followed by the next head (an array's
    or a map's items come right after it, a tag's content likewise); a string's head by its
    bytes. 0: a string whose length follows in 1 to 8 bytes (read it); -1: a head strict
    decoding refuses anyway (indefinite length, break, reserved additional information)."""
    steps = []
    for head in range(256):
        major, info = head >> 5, head & 0x1F
        if info < 24:
            steps.append(1 + info if major in (2, 3) else 1)
        elif info < 28:
            steps.append(0 if major in (2, 3) else 1 + (1 << (info - 24)))
        else:
            steps.append(-1)
    return tuple(steps)


_ITEM_STEPS = _item_steps()


def check_item_count(data: bytes | bytearray | memoryview, max_items: int, what: str) -> None:
    """Refuse (``ProtocolError``) ``data`` when it holds more than ``max_items`` CBOR items,
    counted without building any: CBOR is a flat sequence of item heads (a container's items
    follow its head, a string's bytes follow its head and are skipped whole), so one walk
    from head to head counts them, stopping after ``max_items``. Depth is left to the
    decoder's ``max_depth``, which refuses before it builds; a walk that runs past the end
    (a truncated frame) stops, and the decoder then says what is wrong. Pure Python, about
    0.1 to 0.2 µs an item (docs/security.md): ``load`` calls it only for frames longer than
    ``max_items`` bytes."""
    steps = _ITEM_STEPS
    pos = 0
    size = len(data)
    try:
        for _ in range(max_items):
            step = steps[data[pos]]
            if step > 0:
                pos += step
            elif step == 0:
                width = 1 << ((data[pos] & 0x1F) - 24)
                pos += 1 + width + int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
            else:
                raise ProtocolError(
                    f"malformed {what}: indefinite-length or reserved item head "
                    f"0x{data[pos]:02x} at byte {pos}"
                )
    except IndexError:
        return  # the walk reached the end, or ran past it (truncated: the decoder says so)
    if pos < size:
        raise ProtocolError(
            f"{what} holds more than {max_items} CBOR items ({size} bytes; "
            f"the limit bounds the memory one frame takes while decoded)"
        )


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
