"""Raft messages on the wire: one strict, versioned CBOR frame per message.

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
  bytes long, nested at most a few levels (plain data: ``max_depth``), whose objects are
  estimated at most ``frame_cost_bound(max_size)`` bytes (from its item heads, before cbor2
  builds any: ``univrs.codec.strict.check_frame_cost``);
* no CBOR tags at all: cbor2 decodes some tags natively (datetimes, bignums, sets, shared
  references ...) before any ``tag_hook`` sees them, so the decoder is also given a
  ``semantic_decoders`` mapping that answers *every* tag number with a rejecting callback;
* no indefinite-length items, no duplicate map keys, text must be valid UTF-8;
* every field is type-checked: ints are ``int`` (never ``bool``) and non-negative where the
  protocol says so, bools are ``bool``, bytes are ``bytes``, node ids are ``str``; entries of an
  AppendEntries must be contiguous after ``prev_log_index``;
* an unknown type tag or a different wire version is refused.

A *batch frame* carries several messages in one websocket frame (issue 14: one frame per peer
per driver step)::

    [WIRE_VERSION, BATCH_TAG, message_frame, message_frame, ...]

each ``message_frame`` exactly the array ``encode_message`` makes (so a batch is built by
concatenating encoded messages behind a header, ``encode_batch``). ``decode_frame`` reads a
single message frame or a batch: 1 to ``MAX_BATCH_MESSAGES`` messages, each checked as above,
no batch inside a batch. A batch frame is sent only to a peer whose hello said it reads them
(``univrs.net.hello``): the layout of every message is unchanged, so the wire version is too.

Every decoding failure raises :class:`univrs.errors.ProtocolError` with a reason; cbor2's own
exceptions are translated at the edge (``univrs.codec.strict``). Encoding our own values is
trusted: a value that cannot be encoded is a local bug and raises ``TypeError``.

Changing the field list of any message, or the meaning of a field, requires bumping
``WIRE_VERSION`` (``tests/test_codec.py`` checks the table against the attrs classes); the
one exception is a trailing optional field (kind ``tail_str``): it is left out of the frame
when None, so such a frame has the layout an older node reads, and a node reads frames with
and without it. ``RequestVoteResponse.leader`` is one (the leader hint, set only by a node
running without ``RaftConfig.unlisted_leaders``; an older node refuses a frame carrying it as
malformed, which costs it only a rejection it would have ignored).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import attrs
import cbor2

from univrs.codec.strict import array_length, frame_cost_bound, load
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
    "BATCH_TAG",
    "MAX_BATCH_MESSAGES",
    "WIRE_VERSION",
    "decode_frame",
    "decode_message",
    "encode_batch",
    "encode_message",
    "membership_from_plain",
    "membership_to_plain",
    "message_fields",
]

WIRE_VERSION = 1
"""The version of the frame layout; the first element of every message frame."""

# A message frame nests at most: frame > meta > membership > addresses > pair.
_MESSAGE_MAX_DEPTH = 5

BATCH_TAG = 100
"""The type tag of a batch frame (never a message's: the table's tags stay below it)."""

MAX_BATCH_MESSAGES = 256
"""The most messages one batch frame may carry (a sender splits longer runs)."""


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


@attrs.frozen(slots=True)
class _Encoded:
    """A value already encoded: its CBOR bytes, written into a frame as they are
    (``_write_encoded``)."""

    cbor: bytes


def _write_encoded(encoder: cbor2.CBOREncoder, value: object) -> None:
    """cbor2's ``default``: called for a value of a type it does not encode itself, which in a
    frame is only ever an ``_Encoded``."""
    if type(value) is not _Encoded:
        raise cbor2.CBOREncodeError(f"cannot serialize type {type(value).__name__}")
    encoder.write(value.cbor)


# The entries encoded last and their CBOR. A step's AppendEntries to each follower carry the
# same entries as a rule (each its own slice of the log, made of the same ``Entry`` objects:
# univrs/raft/leader.py ``_send_append``): the second is written with the first's bytes.
# (Entries are immutable: the same objects encode to the same bytes.) Fewer than
# ``_SHARED_FROM`` entries are encoded with the frame: keeping them costs more than it saves.
_last_entries: tuple[tuple[Entry, ...], _Encoded] = ((), _Encoded(cbor2.dumps([])))
_SHARED_FROM = 8


def _enc_entries(entries: tuple[Entry, ...]) -> list[list[Any]] | _Encoded:
    global _last_entries
    if len(entries) < _SHARED_FROM:
        return [[e.term, e.index, e.kind.value, e.data] for e in entries]
    last, encoded = _last_entries
    if len(entries) == len(last) and all(map(operator.is_, entries, last)):
        return encoded
    encoded = _Encoded(cbor2.dumps([[e.term, e.index, e.kind.value, e.data] for e in entries]))
    _last_entries = (entries, encoded)
    return encoded


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
    # A trailing optional field (last in its message): omitted from the frame when None, so
    # a frame without it keeps the layout older nodes read (no wire version bump).
    tail: bool = False


UINT = _Kind(name="uint", encode=_enc_same, decode=_dec_uint)
BOOL = _Kind(name="bool", encode=_enc_same, decode=_dec_bool)
STR = _Kind(name="str", encode=_enc_same, decode=_dec_str)
BYTES = _Kind(name="bytes", encode=_enc_same, decode=_dec_bytes)
TAIL_STR = _Kind(name="tail_str", encode=_enc_same, decode=_dec_str, tail=True)
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
    (2, RequestVoteResponse, (("granted", BOOL), ("pre_vote", BOOL), ("leader", TAIL_STR))),
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
    """One row of the table, with the full field list (common fields first), and what
    ``encode_message`` reads off it, made once: ``values`` (the fields' values of a message,
    in wire order, in one call), ``converted`` (the frame positions of fields written other
    than as they are, with their ``encode``) and ``tail`` (the last field is a trailing
    optional one)."""

    tag: int
    cls: type[Message]
    fields: tuple[tuple[str, _Kind], ...]
    values: Callable[[Message], tuple[Any, ...]] = attrs.field(init=False)
    converted: tuple[tuple[int, Callable[[Any], Any]], ...] = attrs.field(init=False)
    tail: bool = attrs.field(init=False)

    @values.default
    def _values(self) -> Callable[[Message], tuple[Any, ...]]:
        # (every message has the three common fields: attrgetter of several names gives a
        # tuple)
        return operator.attrgetter(*(name for name, _kind in self.fields))

    @converted.default
    def _converted(self) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
        return tuple(
            (2 + i, kind.encode)
            for i, (_name, kind) in enumerate(self.fields)
            if kind.encode is not _enc_same
        )

    @tail.default
    def _tail(self) -> bool:
        assert all(not kind.tail for _name, kind in self.fields[:-1]), "a tail field is last"
        last = self.fields[-1][1]
        assert not last.tail or last.encode is _enc_same, "a tail field is written as it is"
        return last.tail


_BATCH_PREFIX = cbor2.dumps(WIRE_VERSION) + cbor2.dumps(BATCH_TAG)

_BY_CLASS: dict[type[Message], _Spec] = {}
_BY_TAG: dict[int, _Spec] = {}
for _tag, _cls, _own in _TABLE:
    assert _tag < BATCH_TAG, "message tags stay below the batch frame's"
    _spec = _Spec(tag=_tag, cls=_cls, fields=_COMMON + _own)
    _BY_CLASS[_cls] = _spec
    _BY_TAG[_tag] = _spec


def message_fields(cls: type[Message]) -> tuple[int, tuple[tuple[str, str], ...]]:
    """The wire type tag of ``cls`` and its ``(field, kind)`` list, in wire order."""
    spec = _BY_CLASS[cls]
    return spec.tag, tuple((name, kind.name) for name, kind in spec.fields)


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def encode_message(msg: Message) -> bytes:
    """Encode a Raft message as one versioned CBOR frame."""
    spec = _BY_CLASS.get(type(msg))
    if spec is None:
        raise TypeError(f"not a wire message: {type(msg).__name__}")
    frame: list[Any] = [WIRE_VERSION, spec.tag, *spec.values(msg)]
    if spec.tail and frame[-1] is None:
        frame.pop()  # a trailing optional field left out (older nodes read the frame)
    try:
        for at, encode in spec.converted:
            frame[at] = encode(frame[at])
        return cbor2.dumps(frame, default=_write_encoded)
    except cbor2.CBOREncodeError as exc:
        raise TypeError(f"cannot encode {type(msg).__name__}: {exc}") from None


def encode_batch(frames: Sequence[bytes]) -> bytes:
    """One batch frame of messages already encoded by :func:`encode_message` (1 to
    ``MAX_BATCH_MESSAGES`` of them, in order)."""
    if not 1 <= len(frames) <= MAX_BATCH_MESSAGES:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_MESSAGES} messages, not {len(frames)}")
    return b"".join((_array_header(len(frames) + 2), _BATCH_PREFIX, *frames))


def _array_header(n: int) -> bytes:
    """The CBOR head of a definite-length array of ``n`` items (major type 4)."""
    if n < 24:
        return bytes((0x80 | n,))
    if n < 256:
        return bytes((0x98, n))
    return b"\x99" + n.to_bytes(2, "big")


def decode_message(data: bytes, *, max_size: int) -> Message:
    """Decode one frame made by :func:`encode_message`; raises ProtocolError if it is invalid."""
    frame = load(
        data,
        max_size=max_size,
        max_depth=_MESSAGE_MAX_DEPTH,
        what="message frame",
        max_cost=frame_cost_bound(max_size),
    )
    return _from_frame(frame)


def decode_frame(
    data: bytes, *, max_size: int, sender_incarnation: str | None = None
) -> tuple[Message, ...]:
    """Decode a message frame or a batch frame (:func:`encode_batch`): its messages, in order.
    Raises ProtocolError if anything in it is invalid (the whole frame is refused); a batch
    of too many messages is refused from its array's head, and a frame whose objects would
    take more than ``frame_cost_bound(max_size)`` bytes from a walk over its item heads,
    before any is decoded. ``sender_incarnation`` (not on the wire): what the messages'
    ``Message.sender_incarnation`` is set to, the incarnation the receiving connection
    attests for their sender (the transport's reader: each message built once, not built
    and then rebuilt with it)."""
    count = array_length(data)
    if count is not None and count > MAX_BATCH_MESSAGES + 2:
        raise ProtocolError(
            f"batch frame of {count - 2} messages (1 to {MAX_BATCH_MESSAGES} allowed)"
        )
    frame = load(
        data,
        max_size=max_size,
        max_depth=_MESSAGE_MAX_DEPTH + 1,
        what="message frame",
        max_cost=frame_cost_bound(max_size),
    )
    if type(frame) is list and len(frame) >= 2 and frame[1] == BATCH_TAG and type(frame[1]) is int:
        _check_version(frame[0])
        items = frame[2:]
        if not 1 <= len(items) <= MAX_BATCH_MESSAGES:
            raise ProtocolError(
                f"batch frame of {len(items)} messages (1 to {MAX_BATCH_MESSAGES} allowed)"
            )
        return tuple(_from_frame(item, sender_incarnation) for item in items)
    return (_from_frame(frame, sender_incarnation),)


def _check_version(version: object) -> None:
    if type(version) is not int or version != WIRE_VERSION:
        raise ProtocolError(
            f"unsupported wire version {version!r} (this node speaks version {WIRE_VERSION})"
        )


def _from_frame(frame: Any, sender_incarnation: str | None = None) -> Message:
    """The message of one decoded message frame (an array), checked (its
    ``sender_incarnation``, which is not on the wire, as given)."""
    if type(frame) is not list or len(frame) < 2:
        raise ProtocolError(
            f"message frame must be an array [version, type, ...], got {_describe(frame)}"
        )
    version, tag = frame[0], frame[1]
    _check_version(version)
    spec = _BY_TAG.get(tag) if type(tag) is int else None
    if spec is None:
        raise ProtocolError(f"unknown message type {tag!r}")
    fields = spec.fields
    if len(frame) == 1 + len(fields) and fields[-1][1].tail:
        fields = fields[:-1]  # the trailing optional field left out: None
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
    if sender_incarnation is not None:
        kwargs["sender_incarnation"] = sender_incarnation
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
