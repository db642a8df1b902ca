"""Strict CBOR decoding of exactly one item, shared by Raft messages and plain data.

``load`` refuses (``ProtocolError``) oversized, empty or truncated input, trailing bytes,
indefinite-length items, duplicate map keys, invalid UTF-8, nesting beyond ``max_depth``, more
than ``max_items`` items or objects estimated over ``max_cost`` bytes (when given) and every
CBOR tag: cbor2 decodes some tags natively (datetimes,
bignums, sets, shared references ...) before any ``tag_hook`` sees them, so the decoder is also
given a ``semantic_decoders`` mapping that answers *every* tag number with a rejecting callback.
cbor2's own exceptions are translated here, at the edge.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import cbor2

from univrs.errors import ProtocolError

__all__ = [
    "COST_PER_FRAME_BYTE",
    "array_length",
    "check_frame_cost",
    "check_item_count",
    "frame_cost",
    "frame_cost_bound",
    "load",
    "strict_decoder",
]

COST_PER_FRAME_BYTE = 24
"""The memory one frame from the network (raft frames, fast-protocol request frames) may
take while decoded: ``COST_PER_FRAME_BYTE`` times the listener's frame size limit
(``frame_cost_bound``; 96 MiB at the default 4 MiB), as estimated by ``check_frame_cost``
from its item heads before cbor2 builds any. cbor2 has no such bound: 4 MiB of empty maps
decoded to 4 million dicts, 300 MB (tracemalloc peak) for one frame. (s13-small) Until
session 13 the bound was 2^20 items, which refused legitimate request frames of many tiny
items that cost next to nothing (4,096 workload creations of 256 empty-string arguments:
1.06 million items, 1.1 MB): the estimate weighs each item by what it builds instead. The
densest legitimate content measured costs under 22 bytes per frame byte (docs/security.md);
the densest hostile forms 64 to 78 bytes per byte, now refused at the bound."""


def frame_cost_bound(max_size: int) -> int:
    """The ``max_cost`` of frames of at most ``max_size`` bytes (``COST_PER_FRAME_BYTE``)."""
    return COST_PER_FRAME_BYTE * max_size


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


def strict_decoder(fp: io.BytesIO, *, max_depth: int, read_size: int = 4096) -> cbor2.CBORDecoder:
    """A decoder of items from ``fp`` with ``load``'s refusals (tags, indefinite lengths,
    duplicate keys, invalid UTF-8, nesting), for a reader that decodes a large frame item by
    item (a snapshot's rows: univrs/storage/sm_tables.py). Its failures are cbor2's own
    exceptions (or any other: a refused tag); the caller translates them.

    ``read_size``: the bytes cbor2 reads ahead from ``fp`` at each ``decode`` (copied, then
    ``fp`` is sought back to the item's end): 4,096 by default, which for items of a hundred
    bytes copies forty times what is decoded (a snapshot's rows: 512, s14-join)."""
    return cbor2.CBORDecoder(
        fp,
        tag_hook=_reject_tag,
        semantic_decoders=_NO_TAGS,
        str_errors="strict",
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        read_size=read_size,
    )


def load(
    data: bytes,
    *,
    max_size: int,
    max_depth: int,
    what: str,
    max_items: int | None = None,
    max_cost: int | None = None,
) -> Any:
    """Decode exactly one CBOR item from ``data``; every failure is a ProtocolError. With
    ``max_items``, a frame of more items is refused before cbor2 builds any of them
    (``check_item_count``: for small frames of a few fields, hellos); with ``max_cost``, a
    frame whose objects are estimated over ``max_cost`` bytes (``check_frame_cost``: frames
    of data)."""
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
    if max_cost is not None and size * _MAX_COST_PER_BYTE > max_cost:
        # No item costs more than _MAX_COST_PER_BYTE per byte it takes: a shorter frame is
        # within the bound unwalked (the write path's frames: kilobytes).
        check_frame_cost(data, max_cost, what)
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


# What decoding builds, in bytes (CPython 3.11, 64-bit, tracemalloc; tests/test_codec_limits.py
# checks the estimate against the peak for the densest forms). Ints of -5..256, the empty and
# one-byte strings and byte strings, false/true/null are CPython's shared objects: their slot
# in the container (counted by the container) is all they take.
_INT = 36  # an int outside CPython's small-int cache (28 to 36 bytes up to 2^64)
_FLOAT = 24
_BYTES = 33  # + the length
_ASCII = 49  # + the length: a str of ASCII characters (any other: at most 27 bytes more)
# Per byte of 0x80 or more in the frame: a str that is not ASCII holds two such bytes at least
# and takes at most 27 bytes more than ``_ASCII`` says. A head of 0x80 or more (a container,
# a float, ...) is no text: its item's cost is that much less (never below 0).
_HIGH_BYTE = 14
_LIST = 56  # + 8 per item
# A container may be a map's key: cbor2 makes an array a tuple (up to 40 bytes more at the
# peak than the list) and a map a FrozenDict (128 bytes more than the dict). The walk does not
# track which items are keys, so every container is charged as one.
_KEY_ARRAY = 40
_KEY_MAP = 128
_SIMPLE = 64  # a simple value other than false/true/null/undefined (strict plain refuses it)
# The most a whole CBOR item is estimated to build per byte it takes: a tree of maps of one
# pair whose key and value are maps, down to empty maps (352 a map of one pair, 192 an empty
# map, charged as keys; two maps a pair: 272 per byte). A frame of ``max_cost /
# _MAX_COST_PER_BYTE`` bytes or fewer is within ``max_cost`` unwalked (tests/
# test_codec_limits.py checks it for any plain value and that tree).
_MAX_COST_PER_BYTE = 288


def _dict_cost(n: int) -> int:
    """Bytes of a dict of ``n`` entries built by inserting them (CPython 3.11, keys of any
    type: 24 bytes an entry, a table of 2^k indices, grown by doubling)."""
    if n == 0:
        return 64
    k = 3
    while (2 << k) // 3 < n:
        k += 1
    width = 1 if k <= 7 else 2 if k <= 15 else 4 if k <= 31 else 8
    return 96 + (1 << k) * width + (2 << k) // 3 * 24


def check_frame_cost(data: bytes | bytearray | memoryview, max_cost: int, what: str) -> None:
    """Refuse (``ProtocolError``) ``data`` when decoding it would build objects estimated
    over ``max_cost`` bytes (``frame_cost``)."""
    if frame_cost(data, max_cost, what) > max_cost:
        raise ProtocolError(
            f"{what} would take more than {max_cost} bytes while decoded ({len(data)} bytes; "
            "the bound keeps a frame's memory in proportion to the frame size limit)"
        )


def _fixed_costs() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per initial byte: what the item builds and how far its next head is, for heads that
    say both alone (-1: the walk reads the length that follows: a string of 24 bytes or
    more, a container of 24 items or more; or a head strict decoding refuses)."""
    costs, steps = [], []
    for head in range(256):
        major, info = head >> 5, head & 0x1F
        cost, step = -1, 1
        if major in (0, 1) and info < 28:
            small = (major == 0 and info < 25) or (major == 1 and info < 5)
            cost = 0 if small else _INT  # -5 to 256 are CPython's small ints
            step = 1 if info < 24 else 1 + (1 << (info - 24))
        elif major == 2 and info < 24:
            cost, step = (0 if info < 2 else _BYTES + info), 1 + info  # b"", one byte: shared
        elif major == 3 and info < 24:
            cost, step = (0 if info < 2 else _ASCII + info), 1 + info  # "", one ASCII char
        elif major == 4 and info < 24:
            cost = _LIST + _KEY_ARRAY + 8 * info
        elif major == 5 and info < 24:
            cost = _dict_cost(info) + _KEY_MAP
        elif major == 6 and info < 24:
            cost = 0  # a tag: the decoder refuses it
        elif major == 7 and info < 28:
            if info < 20:
                cost = _SIMPLE
            elif info < 24:
                cost = 0  # false, true, null, undefined
            else:
                cost, step = (_SIMPLE, 2) if info == 24 else (_FLOAT, 1 + (1 << (info - 24)))
        if head >= 0x80 and cost > 0:
            cost = max(0, cost - _HIGH_BYTE)  # not text: its byte's share comes back
        costs.append(cost)
        steps.append(step)
    return tuple(costs), tuple(steps)


_FIXED_COST, _FIXED_STEP = _fixed_costs()
# The walk's table: cost << 5 | step for a head that says both (step 1 to 24), 1 for a head of
# cost 0 and one byte (a run of them is skipped at once), 0 for the others.
_WALK = tuple(c << 5 | st if c >= 0 else 0 for c, st in zip(_FIXED_COST, _FIXED_STEP, strict=True))
# Heads of one byte that build nothing (small ints, false/true/null, empty strings; tag heads,
# which the decoder refuses): a run of them is skipped by one match of a character class, at
# C speed (4 MiB of zeros: a few milliseconds).
_FREE_HEADS = bytes(h for h in range(256) if _FIXED_COST[h] == 0 and _FIXED_STEP[h] == 1)
_FREE_RUN = re.compile(b"[" + b"".join(b"\\x%02x" % h for h in _FREE_HEADS) + b"]+")
_HIGH = bytes(range(0x80, 0x100))
# What a str of ``_LOOK_INTO_TEXT`` bytes or more peaks at while decoded, per byte of its
# UTF-8 (s13-review: tests/test_review_codec.py): the read buffer and the str (ASCII), or the
# buffer, the decoder's narrow form and its widened copy (any byte of 0x80 or more).
_ASCII_TEXT = 2
_WIDE_TEXT = 6
_LOOK_INTO_TEXT = 256  # text of at least this many bytes is weighed by its peak
_HIGH_SEARCH = re.compile(b"[\x80-\xff]").search
# Shorter text (s14-small): a str holding a character of U+0100 or more stores every
# character in 2 or 4 bytes (``72 + width * (characters + 1)`` bytes), ASCII ones too, so
# ASCII's ``49 + length`` falls short (up to about 3 bytes per frame byte: s13-review R1). In
# valid UTF-8 (strict decoding refuses any other) such a character is a byte of 0xC4 to 0xF4
# followed by one of 0x80 to 0xBF. The walk finds such pairs in an image of the frame that
# maps every byte to its class (``_CLASSES``: one ``translate``, which also counts the bytes
# of 0x80 or more, then ``find``, both at C speed), keeps where the next one starts
# (found again once passed: the image is scanned once) and looks into a short string of
# ``_WIDE_FROM`` bytes or more only if one starts inside it. Pairs outside text (an int's
# bytes, ``false`` before a container) only cost a look at the strings they fall in: none.
_CLASSES = bytes(  # a: ASCII, C: continuation, L: lead of U+0100 or more, F: 0xF4, h: other
    0x61
    if b < 0x80
    else 0x43
    if b < 0xC0
    else 0x4C
    if 0xC4 <= b < 0xF4
    else 0x46
    if b == 0xF4
    else 0x68
    for b in range(256)
)
# 0xF4 is also the head of ``false``: a lead (of U+100000 or more) only in a frame where it is
# followed by a continuation byte somewhere, then the image is made with this table.
_CLASSES_F4 = _CLASSES.replace(b"F", b"L")


def _next_pair(image: bytes, pos: int) -> int:
    """Where the next lead of U+0100 or more followed by a continuation byte starts in the
    class image, at or after ``pos`` (-1: none). ``find`` of one byte (memchr) runs several
    times faster than ``find`` of the pair."""
    while True:
        pos = image.find(b"L", pos)
        if pos < 0 or image[pos + 1 : pos + 2] == b"C":
            return pos
        pos += 1


_WIDE_STR = 72  # + width * (characters + 1): a str of characters of U+0100 or more
_WIDE_FROM = 6  # shorter text is within its ASCII charge and its bytes' ``_HIGH_BYTE`` anyway
# The table while a pair may lie ahead: text of ``_WIDE_FROM`` to 23 bytes is -length.
_WALK_WIDE = tuple(
    -(head - 0x60) if 0x60 + _WIDE_FROM <= head < 0x78 else entry
    for head, entry in enumerate(_WALK)
)


def _short_text_cost(text: bytes) -> int:
    """What decoding a str of fewer than ``_LOOK_INTO_TEXT`` bytes builds, beyond the
    ``_HIGH_BYTE`` its bytes of 0x80 or more were charged up front: ASCII and Latin-1 text
    ``49 + length`` (a Latin-1 str takes 24 bytes more and holds 2 such bytes at least);
    other text as if every byte were a character of 2 bytes (4 past U+FFFF), less the
    ``_HIGH_BYTE`` of the 2 such bytes it holds at least."""
    if text.isascii():
        return _ASCII + len(text)
    top = max(text)
    if top < 0xC4:
        return _ASCII + len(text)
    width = 4 if top >= 0xF0 else 2
    return _WIDE_STR + width * (len(text) + 1) - 2 * _HIGH_BYTE


def frame_cost(data: bytes | bytearray | memoryview, stop_above: int, what: str = "frame") -> int:
    """The bytes of objects decoding ``data`` would build, estimated from one walk over its
    item heads without building any (as ``check_item_count``; a string's bytes are skipped):
    each item weighs what CPython builds for it (the constants above; a container's slots
    are the container's), so a frame of millions of tiny items that build nothing (small
    ints, empty strings in an array) costs little while one of millions of empty maps costs
    72 bytes a map. Text of ``_LOOK_INTO_TEXT`` bytes or more is weighed by its decoding peak
    (2 or 6 times its length: ``_ASCII_TEXT``, ``_WIDE_TEXT``); shorter text as ASCII (49
    bytes + its length), plus ``_HIGH_BYTE`` for every byte of 0x80 or more that is not an
    item head (a Latin-1 str takes at most 24 bytes more and holds two such bytes at least),
    or, when it holds a character of U+0100 or more (s14-small: ``_next_pair``), as 2 or 4
    bytes a byte (``_short_text_cost``): an estimate that never falls short (1 to 3.5 times
    what the densest forms build: tests/test_codec_limits.py, tests/test_codec_text_bound.py). The
    walk stops once the estimate passes ``stop_above``, and at the end of ``data`` (a
    truncated frame: the decoder then says what is wrong); an indefinite-length or reserved
    head is refused (``ProtocolError``)."""
    if not isinstance(data, bytes):
        data = bytes(data)
    size = len(data)
    pos = 0
    image = data.translate(_CLASSES)  # each byte's class (s14-small: ``_next_pair``)
    if image.find(b"F") >= 0 and image.find(b"FC") >= 0:
        image = data.translate(_CLASSES_F4)
    cost = (size - image.count(b"a")) * _HIGH_BYTE
    # Where the next character of U+0100 or more may start (``_next_pair``; s14-small):
    # -1 before the first look; ``size``, none ahead, and short text is walked as ASCII on.
    wide = -1
    table, free_run = _WALK_WIDE, _FREE_RUN.match
    while pos < size and cost <= stop_above:
        fixed = table[data[pos]]
        if fixed == 1:  # builds nothing; a run of such heads at once
            pos += 1
            if pos < size and table[data[pos]] == 1:
                pos = free_run(data, pos).end()  # type: ignore[union-attr]
            continue
        if fixed > 0:
            cost += fixed >> 5
            pos += fixed & 31
            continue
        if fixed < 0:  # short text while a wide character may lie ahead (``_WALK_WIDE``)
            pos += 1
            if wide < pos:
                wide = _next_pair(image, pos)
                if wide < 0:
                    wide, table = size, _WALK
            end = pos - fixed
            cost += _short_text_cost(data[pos:end]) if wide < end else _ASCII - fixed
            pos = end
            continue
        head = data[pos]
        major, info = head >> 5, head & 0x1F
        if info >= 28:
            raise ProtocolError(
                f"malformed {what}: indefinite-length or reserved item head "
                f"0x{head:02x} at byte {pos}"
            )
        if info == 24:
            arg = data[pos + 1] if pos + 1 < size else 0
            pos += 2
        else:
            width = 1 << (info - 24)
            arg = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
            pos += 1 + width
        if head >= 0x80:
            cost -= _HIGH_BYTE  # a head, not text
        if major == 3 and arg < _LOOK_INTO_TEXT:
            if wide < pos:
                wide = _next_pair(image, pos)
                if wide < 0:
                    wide, table = size, _WALK
            end = pos + arg
            cost += _short_text_cost(data[pos:end]) if wide < end else _ASCII + arg
            pos = end
        elif major == 3:
            # A long str peaks above its length while decoded (s13-review): cbor2 reads its
            # bytes into a buffer first (about 2x for ASCII), and CPython's UTF-8 decoder
            # widens its 1-byte form on the first wider character, every character then
            # taking up to 4 bytes (about 6x: 1 MiB of ASCII and one emoji peaked at 6.3 MB).
            # Its bytes of 0x80 or more were charged ``_HIGH_BYTE`` each up front (for short
            # strings): a long one's peak is charged here instead.
            # Looked into only from ``_LOOK_INTO_TEXT`` bytes (a search per string would slow
            # the walk of frames of many short ones by half): a shorter one is weighed by its
            # built size, ASCII or not (a few bytes short per frame byte for mixed text).
            if arg < _LOOK_INTO_TEXT:
                cost += _ASCII + arg
            elif _HIGH_SEARCH(data, pos, pos + arg) is None:
                cost += _ASCII + _ASCII_TEXT * arg
            else:
                high = arg - len(data[pos : pos + arg].translate(None, _HIGH))
                cost += _ASCII + _WIDE_TEXT * arg - _HIGH_BYTE * high
            pos += arg
        elif major == 2:
            cost += _BYTES + arg
            pos += arg
        elif major == 4:
            cost += _LIST + _KEY_ARRAY + 8 * arg
        elif major == 5:
            cost += _dict_cost(arg) + _KEY_MAP
        # major 6, a tag with a longer number: the decoder refuses it
    return cost


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
