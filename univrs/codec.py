"""The wire codec: strict CBOR for Raft messages and for plain data.

Theory of operation
-------------------
Every Raft message travels as ONE CBOR array, a *frame*::

    [WIRE_VERSION, type_tag, field_1, field_2, ...]

``_TABLE`` below is the single place that maps a message class to its small integer type tag
and to the ordered list of its fields with their wire kinds. Nested values are arrays too, never
maps, so a batch of entries costs no per-field key overhead (the hot path: AppendEntries)::

    Entry        [term, index, kind, data]
    SnapshotMeta [index, term, membership]
    Membership   [[voters], [learners], [[node_id, address], ...], [[node_id, api_address], ...]]
                 plus [[node_id, incarnation], ...] as a fifth item when any member is bound

Decoding is strict, because frames come from the network:

* the frame must be exactly one CBOR item (trailing bytes are refused), at most ``max_size``
  bytes long, nested at most a few levels (plain data: ``max_depth``);
* no CBOR tags at all: cbor2 decodes some tags natively (datetimes, bignums, sets, shared
  references ...) before any ``tag_hook`` sees them, so the decoder is also given a
  ``semantic_decoders`` mapping that answers *every* tag number with a rejecting callback;
* no indefinite-length items, no duplicate map keys, text must be valid UTF-8;
* every field is type-checked: ints are ``int`` (never ``bool``) and non-negative where the
  protocol says so, bools are ``bool``, bytes are ``bytes``, node ids are ``str``; entries of an
  AppendEntries must be contiguous after ``prev_log_index``;
* an unknown type tag or a different wire version is refused.

Every decoding failure raises :class:`univrs.errors.ProtocolError` with a reason; cbor2's own
exceptions are translated here, at the edge. Encoding our own values is trusted: a value that
cannot be encoded is a local bug and raises ``TypeError``.

Changing the field list of any message, or the meaning of a field, requires bumping
``WIRE_VERSION`` (``tests/test_codec.py`` checks the table against the attrs classes).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import attrs
import cbor2

from univrs.errors import ProtocolError
from univrs.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "WIRE_VERSION",
    "decode_message",
    "decode_plain",
    "encode_message",
    "encode_plain",
    "membership_from_plain",
    "membership_to_plain",
    "message_fields",
]

WIRE_VERSION = 1
"""The version of the frame layout; the first element of every message frame."""

DEFAULT_MAX_DEPTH = 32
"""Default bound on container nesting for plain data."""

# A message frame nests at most: frame > meta > membership > addresses > pair.
_MESSAGE_MAX_DEPTH = 5

_UINT_MAX = (1 << 64) - 1


# --------------------------------------------------------------------------------------------
# Field kinds: how one attribute is written and how it is checked when read back.
# --------------------------------------------------------------------------------------------


def _fail(field: str, expected: str, value: object) -> NoReturn:
    raise ProtocolError(f"field {field!r}: expected {expected}, got {_describe(value)}")


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _dec_uint(value: Any, field: str) -> int:
    # type() rather than isinstance(): bool is a subclass of int and must not pass as one.
    if type(value) is not int or value < 0:
        _fail(field, "a non-negative integer", value)
    return value


def _dec_bool(value: Any, field: str) -> bool:
    if type(value) is not bool:
        _fail(field, "a boolean", value)
    return value


def _dec_str(value: Any, field: str) -> str:
    if type(value) is not str:
        _fail(field, "a text string", value)
    return value


def _dec_bytes(value: Any, field: str) -> bytes:
    if type(value) is not bytes:
        _fail(field, "a byte string", value)
    return value


def _enc_same(value: Any) -> Any:
    return value


_KINDS: dict[int, EntryKind] = {k.value: k for k in EntryKind}


def _enc_entries(entries: tuple[Entry, ...]) -> list[list[Any]]:
    return [[e.term, e.index, e.kind.value, e.data] for e in entries]


def _dec_entries(value: Any, field: str) -> tuple[Entry, ...]:
    if type(value) is not list:
        _fail(field, "an array of entries", value)
    out = []
    kinds = _KINDS
    for item in value:
        if type(item) is not list or len(item) != 4:
            _fail(field, "an entry [term, index, kind, data]", item)
        term, index, kind, data = item
        if type(term) is not int or term < 1:
            _fail(f"{field}.term", "an integer >= 1", term)
        if type(index) is not int or index < 1:
            _fail(f"{field}.index", "an integer >= 1", index)
        if type(kind) is not int or kind not in kinds:
            _fail(f"{field}.kind", f"one of {sorted(kinds)}", kind)
        if type(data) is not bytes:
            _fail(f"{field}.data", "a byte string", data)
        out.append(Entry(term=term, index=index, kind=kinds[kind], data=data))
    return tuple(out)


def membership_to_plain(m: Membership) -> list[Any]:
    """``[voters, learners, addresses, api_addresses(, incarnations)]``, sorted, so every node
    writes the same; the incarnations item is left out when empty (older snapshots decode)."""
    out: list[Any] = [
        sorted(m.voters),
        sorted(m.learners),
        [[nid, addr] for nid, addr in sorted(m.addresses)],
        [[nid, addr] for nid, addr in sorted(m.api_addresses)],
    ]
    if m.incarnations:
        out.append([[nid, inc] for nid, inc in sorted(m.incarnations)])
    return out


def membership_from_plain(value: Any, field: str = "membership") -> Membership:
    """Inverse of :func:`membership_to_plain`; raises ProtocolError if ``value`` is malformed."""
    if type(value) is not list or len(value) not in (4, 5):
        _fail(field, "a membership [voters, learners, addresses, api_addresses(, incs)]", value)
    voters, learners, addresses, api_addresses = value[:4]
    incarnations = value[4] if len(value) == 5 else []
    try:
        return Membership(
            voters=frozenset(_dec_str_list(voters, f"{field}.voters")),
            learners=frozenset(_dec_str_list(learners, f"{field}.learners")),
            addresses=_dec_pairs(addresses, f"{field}.addresses"),
            api_addresses=_dec_pairs(api_addresses, f"{field}.api_addresses"),
            incarnations=_dec_pairs(incarnations, f"{field}.incarnations"),
        )
    except ValueError as exc:
        raise ProtocolError(f"field {field!r}: invalid membership: {exc}") from None


def _dec_str_list(value: Any, field: str) -> list[str]:
    if type(value) is not list:
        _fail(field, "an array of node ids", value)
    for item in value:
        _dec_str(item, field)
    return value


def _dec_pairs(value: Any, field: str) -> tuple[tuple[str, str], ...]:
    if type(value) is not list:
        _fail(field, "an array of [node_id, address]", value)
    pairs = []
    for pair in value:
        if type(pair) is not list or len(pair) != 2:
            _fail(field, "a pair [node_id, address]", pair)
        pairs.append((_dec_str(pair[0], field), _dec_str(pair[1], field)))
    # Canonical (sorted, as every node writes them): a frame that lists pairs in another
    # order decodes to the same value as the canonical one, and survives a round trip.
    return tuple(sorted(pairs))


def _enc_meta(meta: SnapshotMeta) -> list[Any]:
    return [meta.index, meta.term, membership_to_plain(meta.membership)]


def _dec_meta(value: Any, field: str) -> SnapshotMeta:
    if type(value) is not list or len(value) != 3:
        _fail(field, "a snapshot meta [index, term, membership]", value)
    index, term, membership = value
    return SnapshotMeta(
        index=_dec_uint(index, f"{field}.index"),
        term=_dec_uint(term, f"{field}.term"),
        membership=membership_from_plain(membership, f"{field}.membership"),
    )


@attrs.frozen(kw_only=True)
class _Kind:
    """How one field is written (``encode``) and checked when read (``decode``)."""

    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any, str], Any]


UINT = _Kind(name="uint", encode=_enc_same, decode=_dec_uint)
BOOL = _Kind(name="bool", encode=_enc_same, decode=_dec_bool)
STR = _Kind(name="str", encode=_enc_same, decode=_dec_str)
BYTES = _Kind(name="bytes", encode=_enc_same, decode=_dec_bytes)
ENTRIES = _Kind(name="entries", encode=_enc_entries, decode=_dec_entries)
META = _Kind(name="snapshot_meta", encode=_enc_meta, decode=_dec_meta)


# --------------------------------------------------------------------------------------------
# THE table: message class <-> type tag and field list. Tags are forever: never reuse one.
# --------------------------------------------------------------------------------------------

_COMMON: tuple[tuple[str, _Kind], ...] = (("term", UINT), ("src", STR), ("dst", STR))

_TABLE: tuple[tuple[int, type[Message], tuple[tuple[str, _Kind], ...]], ...] = (
    (
        1,
        RequestVote,
        (
            ("last_log_index", UINT),
            ("last_log_term", UINT),
            ("pre_vote", BOOL),
            ("transfer", BOOL),
        ),
    ),
    (2, RequestVoteResponse, (("granted", BOOL), ("pre_vote", BOOL))),
    (
        3,
        AppendEntries,
        (
            ("prev_log_index", UINT),
            ("prev_log_term", UINT),
            ("entries", ENTRIES),
            ("commit", UINT),
        ),
    ),
    (
        4,
        AppendEntriesResponse,
        (("success", BOOL), ("index", UINT), ("hint_index", UINT), ("hint_term", UINT)),
    ),
    (5, Heartbeat, (("commit", UINT), ("ctx", UINT))),
    (6, HeartbeatResponse, (("ctx", UINT),)),
    (7, TimeoutNow, ()),
    (8, ReadIndexRequest, (("ctx", UINT),)),
    (9, ReadIndexResponse, (("ctx", UINT), ("index", UINT), ("ok", BOOL))),
    (
        10,
        InstallSnapshot,
        (
            ("meta", META),
            ("offset", UINT),
            ("data", BYTES),
            ("done", BOOL),
            ("total_size", UINT),
            ("checksum", UINT),
        ),
    ),
    (
        11,
        InstallSnapshotResponse,
        (("snapshot_index", UINT), ("offset", UINT), ("success", BOOL)),
    ),
)


@attrs.frozen(kw_only=True)
class _Spec:
    """One row of the table, with the full field list (common fields first)."""

    tag: int
    cls: type[Message]
    fields: tuple[tuple[str, _Kind], ...]


_BY_CLASS: dict[type[Message], _Spec] = {}
_BY_TAG: dict[int, _Spec] = {}
for _tag, _cls, _own in _TABLE:
    _spec = _Spec(tag=_tag, cls=_cls, fields=_COMMON + _own)
    _BY_CLASS[_cls] = _spec
    _BY_TAG[_tag] = _spec


def message_fields(cls: type[Message]) -> tuple[int, tuple[tuple[str, str], ...]]:
    """The wire type tag of ``cls`` and its ``(field, kind)`` list, in wire order."""
    spec = _BY_CLASS[cls]
    return spec.tag, tuple((name, kind.name) for name, kind in spec.fields)


# --------------------------------------------------------------------------------------------
# Strict CBOR decoding shared by messages and plain data.
# --------------------------------------------------------------------------------------------


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


def _load(data: bytes, *, max_size: int, max_depth: int, what: str) -> Any:
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


def _reason(exc: BaseException) -> str:
    seen: BaseException | None = exc
    for _ in range(8):  # bounded walk down the cause chain
        if seen is None:
            break
        if isinstance(seen, _TagRejected):
            return f"{seen} ({exc})"
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def encode_message(msg: Message) -> bytes:
    """Encode a Raft message as one versioned CBOR frame."""
    spec = _BY_CLASS.get(type(msg))
    if spec is None:
        raise TypeError(f"not a wire message: {type(msg).__name__}")
    frame: list[Any] = [WIRE_VERSION, spec.tag]
    frame.extend(kind.encode(getattr(msg, name)) for name, kind in spec.fields)
    try:
        return cbor2.dumps(frame)
    except cbor2.CBOREncodeError as exc:
        raise TypeError(f"cannot encode {type(msg).__name__}: {exc}") from None


def decode_message(data: bytes, *, max_size: int) -> Message:
    """Decode one frame made by :func:`encode_message`; raises ProtocolError if it is invalid."""
    frame = _load(data, max_size=max_size, max_depth=_MESSAGE_MAX_DEPTH, what="message frame")
    if type(frame) is not list or len(frame) < 2:
        raise ProtocolError(
            f"message frame must be an array [version, type, ...], got {_describe(frame)}"
        )
    version, tag = frame[0], frame[1]
    if type(version) is not int or version != WIRE_VERSION:
        raise ProtocolError(
            f"unsupported wire version {version!r} (this node speaks version {WIRE_VERSION})"
        )
    spec = _BY_TAG.get(tag) if type(tag) is int else None
    if spec is None:
        raise ProtocolError(f"unknown message type {tag!r}")
    fields = spec.fields
    if len(frame) != 2 + len(fields):
        raise ProtocolError(
            f"{spec.cls.__name__} frame has {len(frame) - 2} fields, expected {len(fields)}"
        )
    kwargs = {
        name: kind.decode(value, name)
        for (name, kind), value in zip(fields, frame[2:], strict=True)
    }
    if spec.cls is AppendEntries:
        _check_contiguous(kwargs["prev_log_index"], kwargs["entries"])
    try:
        return spec.cls(**kwargs)
    except (TypeError, ValueError) as exc:  # attrs validation of a well-typed value
        raise ProtocolError(f"invalid {spec.cls.__name__}: {exc}") from None


def _check_contiguous(prev_log_index: int, entries: tuple[Entry, ...]) -> None:
    expected = prev_log_index + 1
    last_term = 0
    for e in entries:
        if e.index != expected:
            raise ProtocolError(
                f"AppendEntries entries are not contiguous: index {e.index} where "
                f"{expected} was expected"
            )
        if e.term < last_term:
            raise ProtocolError(
                f"AppendEntries entry {e.index} has a smaller term than the one before it"
            )
        last_term = e.term
        expected += 1


# --------------------------------------------------------------------------------------------
# Plain data: None, bool, int, float, str, bytes, arrays and maps keyed by str / int / bytes.
# --------------------------------------------------------------------------------------------


def encode_plain(obj: Any) -> bytes:
    """Encode plain data (see :func:`decode_plain` for what is plain). Tuples become arrays.

    Raises ``TypeError`` for anything else (sets, datetimes, custom classes, ...), so we never
    produce a frame our own decoder would refuse.
    """
    _check_plain_out(obj, DEFAULT_MAX_DEPTH)
    return cbor2.dumps(obj)


def decode_plain(data: bytes, *, max_size: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode one plain CBOR item strictly; raises ProtocolError if it is invalid.

    Plain values are ``None``, ``bool``, ``int`` (64-bit CBOR range), ``float``, ``str``,
    ``bytes``, ``list`` and ``dict`` whose keys are ``str``, ``int`` or ``bytes``; containers
    nest at most ``max_depth`` deep. No tags, simple values or ``undefined``.
    """
    obj = _load(data, max_size=max_size, max_depth=max_depth, what="plain frame")
    _check_plain_in(obj, max_depth)
    return obj


_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)
_PLAIN_KEYS = (int, str, bytes)


_PLAIN_SCALAR_SET = frozenset(_PLAIN_SCALARS)
_PLAIN_KEY_SET = frozenset(_PLAIN_KEYS)


def _check_plain_in(obj: Any, depth: int) -> None:
    """Refuse (ProtocolError) a decoded item that is not plain data. Runs on every frame and
    entry payload decoded: scalar members of a container are checked in place (one call per
    container, not per value)."""
    t = type(obj)
    if t in _PLAIN_SCALAR_SET:
        return
    if depth <= 0:
        raise ProtocolError("plain frame nests too deep")
    if t is list:
        for item in obj:
            if type(item) not in _PLAIN_SCALAR_SET:
                _check_plain_in(item, depth - 1)
    elif t is dict:
        for key, value in obj.items():
            if type(key) not in _PLAIN_KEY_SET:
                raise ProtocolError(f"plain frame has a map key of type {type(key).__name__}")
            if type(value) not in _PLAIN_SCALAR_SET:
                _check_plain_in(value, depth - 1)
    else:
        raise ProtocolError(f"plain frame contains a {t.__name__}, which is not plain data")


_EXACT_SCALARS_OUT = frozenset({type(None), bool, float, str, bytes})


def _check_plain_out(obj: Any, depth: int) -> None:
    """Refuse (TypeError) what is not plain data. The exact built-in types take a fast path
    (this runs on every proposal the leader encodes); subclasses (enums, ...) and everything
    else take the general one, ``_check_plain_out_general``, which decides alike."""
    t = type(obj)
    if t in _EXACT_SCALARS_OUT:
        return
    if t is int:
        if not -(1 << 64) <= obj <= _UINT_MAX:
            raise TypeError(f"integer {obj} is outside the CBOR 64-bit range")
        return
    if depth <= 0:
        _check_plain_out_general(obj, depth)
        return
    if t is dict:
        for key, value in obj.items():
            kt = type(key)
            if kt is not str or type(value) not in _EXACT_SCALARS_OUT:
                if kt is not str:
                    if isinstance(key, bool) or not isinstance(key, _PLAIN_KEYS):
                        raise TypeError(f"map key {key!r} is not a str, int or bytes")
                    _check_plain_out(key, depth - 1)
                _check_plain_out(value, depth - 1)
    elif t is list or t is tuple:
        for item in obj:
            if type(item) not in _EXACT_SCALARS_OUT:
                _check_plain_out(item, depth - 1)
    else:
        _check_plain_out_general(obj, depth)


def _check_plain_out_general(obj: Any, depth: int) -> None:
    if obj is None or isinstance(obj, bool | float | str | bytes):
        return
    if isinstance(obj, int):
        if not -(1 << 64) <= obj <= _UINT_MAX:
            raise TypeError(f"integer {obj} is outside the CBOR 64-bit range")
        return
    if depth <= 0:
        raise TypeError(f"plain data nests deeper than {DEFAULT_MAX_DEPTH}")
    if isinstance(obj, list | tuple):
        for item in obj:
            _check_plain_out(item, depth - 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, _PLAIN_KEYS):
                raise TypeError(f"map key {key!r} is not a str, int or bytes")
            _check_plain_out(key, depth - 1)
            _check_plain_out(value, depth - 1)
    else:
        raise TypeError(f"{type(obj).__name__} is not plain data")
