"""The bytes of a NORMAL log entry: state-machine command envelopes and a leader-stamped time.

Forms (CBOR, via univrs.codec):

* version 1, one command: ``[1, time_ms, envelope_plain]``;
* version 2, a batch entry: ``[2, time_ms, [envelope_plain, ...]]`` (at least one; issue 14,
  "one log entry may carry a batch of commands"). The state machine applies its commands in
  order at consecutive revisions (``ClusterStateMachine.apply_batch``), each with its own
  session and sequence number and its own response;
* version 3 (s14-owner), one command or a batch whose envelopes may carry an ``owner`` (the
  identity of a keyed command's caller, checked against its session's owner by the state
  machine): ``[3, time_ms, [envelope_plain, ...]]`` (at least one; one command applies as a
  version-1 entry does, several as a version-2 entry). In a version-1 or 2 entry ``owner`` is
  an unknown key, refused alike by every replica, as the code that wrote it refuses it.

The time is the proposing leader's log clock in milliseconds (univrs/runtime/stamps.py: the
last stamp it applied advanced by its monotonic clock; its wall clock until session 14, which
older leaders still stamp); the state machine uses it only for deterministic session expiry
(every replica sees the same number, from the log). Decoding never raises on bad bytes: a
replica must apply every committed entry, so a bad payload yields an error response instead:
for the whole entry when the payload itself is bad (not CBOR, not one of the forms above), for
one command when only its envelope is bad (the other commands of its batch apply: the same on
every replica, since they all decode the same bytes).

Version 2 is proposed only by a leader told so (the node setting ``raft.batch_entries``, on
by default) and only while every member of its configuration has announced in its hello that
it applies version 2 (``univrs/runtime/capabilities.py``): a node that predates version 2 would
answer such an entry with an error and change nothing while the others apply its commands.
Version 3 likewise, only while every member announced 3: until then the leader drops the
owners of its envelopes and writes versions 1 and 2 (the owner check is then the API's alone,
as before). Every node reads all three.

A newer version (``version > max_version``, this code's ``MAX_PAYLOAD_VERSION`` unless a test
makes a node look older) is never answered with an error: every other replica may apply it,
so answering it would make this one diverge. ``decode_entry`` raises
``UnsupportedPayloadVersion`` and the apply loop stops the node with that message (upgrade it).
Only a leader writes NORMAL payloads (clients send requests, never entry bytes), so such an
entry comes from a newer member, never from a client.

A batch is built by splicing the version-1 payloads its proposers encoded (``batch_payload``):
the bytes of each envelope are reused as they are, no command is encoded twice. Only
proposals whose document round-trips exactly (below) go in a batch, so a batch nests at most
``EXACT_DEPTH + 3`` deep, well inside the decoder's bound; the others stay single entries.

The leader's own entries (issue 14: do not re-decode them at apply). ``encode_payload_doc``
also returns the plain document it encoded when that document *round-trips exactly*: it holds
only exact ``str``, ``int``, ``bool``, ``None``, ``bytes``, ``list`` and ``dict`` with ``str``
keys, nested at most ``EXACT_DEPTH`` deep, its integers within CBOR's 64-bit range (no float,
tuple, subclass or other key type). Such a document is plain data, so it is encoded without
``encode_plain``'s own walk over it (one walk per proposal, not two). CBOR encodes each of
those to an item that the strict decoder turns back into an equal value of the very same
type, so ``decode_plain(encode_plain(doc)) == doc`` with identical types. The apply loop
then reads the envelope from that document (``decode_own_payload``) instead of decoding the
entry's bytes: the same strict ``envelope_from_plain`` and the same checks as
``decode_payload`` run on an equal value, so the leader applies exactly what its followers
decode from the log (a command of wrong types is refused alike everywhere). Anything else
(no document, a payload over ``MAX_PAYLOAD_BYTES``) takes ``decode_payload``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import cbor2

from univrs import codec
from univrs.codec import DEFAULT_MAX_DEPTH, check_plain
from univrs.codec.strict import load as strict_load
from univrs.errors import ProtocolError
from univrs.sm.builders import slot_builder
from univrs.sm.commands import Envelope, ScaleWorkload
from univrs.sm.plain import (
    COMMAND_FORMAT_VERSION,
    command_type_tag,
    envelope_from_plain,
    envelope_plain_fast,
    envelope_to_plain,
)

PAYLOAD_VERSION = 1
BATCH_VERSION = 2
OWNER_VERSION = 3  # envelopes may carry their caller's identity (s14-owner)
MAX_PAYLOAD_VERSION = OWNER_VERSION  # the newest payload version this code applies
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
EXACT_DEPTH = 16  # containers nested deeper than this are decoded from the bytes at apply

_EXACT_SCALARS = frozenset({str, int, bool, type(None), bytes})
_EXACT_NON_INT = _EXACT_SCALARS - {int}
_INT_MIN, _INT_MAX = -(1 << 64), (1 << 64) - 1  # CBOR's integers (codec.encode_plain's bound)
_UINT64_MIN = 1 << 32  # CBOR's shortest form of an unsigned integer from here on: 8 bytes
_pack_uint64 = struct.Struct(">BQ").pack  # its head (0x1B) and the integer


class UnsupportedPayloadVersion(Exception):
    """A committed entry carries a payload version newer than this node applies: the node
    must stop (upgrade it) rather than answer it with an error and diverge."""

    def __init__(self, version: int, max_version: int) -> None:
        super().__init__(
            f"a committed entry carries payload version {version}; this node applies versions "
            f"up to {max_version} only: upgrade it (answering the entry with an error would "
            "make this replica diverge from the others)"
        )
        self.version = version
        self.max_version = max_version


def encode_payload(envelope: Envelope, time_ms: int) -> bytes:
    """The entry bytes for ``envelope`` proposed at leader time ``time_ms`` (version 3 if it
    carries an owner, else version 1)."""
    return codec.encode_plain(_single_doc(envelope, time_ms))


def _single_doc(envelope: Envelope, time_ms: int) -> list[Any]:
    if envelope.owner is not None:
        return [OWNER_VERSION, time_ms, [envelope_to_plain(envelope)]]
    return [PAYLOAD_VERSION, time_ms, envelope_to_plain(envelope)]


def encode_payload_doc(envelope: Envelope, time_ms: int) -> tuple[bytes, list[Any] | None]:
    """The entry bytes, and the plain document they encode if it round-trips exactly (see the
    module docstring), else None.

    One walk over the document per proposal: a document that round-trips exactly is plain
    data (exact built-in types, integers in CBOR's range, nested less than
    ``codec.encode_plain``'s bound), so it is encoded without ``encode_plain``'s own check
    (the same ``cbor2.dumps``, the same bytes); any other is encoded by ``encode_plain``,
    which refuses what is not plain (``TypeError``) as before."""
    command = envelope.command
    # The common proposal, a scale, built and checked in one step (session 31).
    scale = _exact_scale(envelope, command) if type(command) is ScaleWorkload else None
    if scale is None:
        plain, body = envelope_to_plain(envelope), None
    else:
        plain, body = scale
    # ``round_trips_exactly(doc, EXACT_DEPTH)`` with the two outer arrays (built here: a
    # version, the time, the envelope) checked in place: the same answer for a scalar time
    # (tests/runtime/test_payload_exact.py), two calls fewer per proposal.
    doc: list[Any]
    owned = envelope.owner is not None
    if owned:
        doc, depth = [OWNER_VERSION, time_ms, [plain]], EXACT_DEPTH - 2
    else:
        doc, depth = [PAYLOAD_VERSION, time_ms, plain], EXACT_DEPTH - 1
    kind = type(time_ms)
    if (kind in _EXACT_NON_INT or (kind is int and _INT_MIN <= time_ms <= _INT_MAX)) and (
        body is not None or round_trips_exactly(plain, depth)
    ):
        # ``cbor2.dumps(doc)``'s bytes with the outer arrays' heads written here: cbor2 tests
        # each list against ``Mapping`` (an ABC check), a third of a µs of a scale's proposal
        # (session 31; tests/runtime/test_payload_exact.py: the same bytes). A leader's time
        # (milliseconds since 1970) is an unsigned integer of 8 bytes in CBOR: its head here.
        dumps = cbor2.dumps
        stamp = (
            _pack_uint64(0x1B, time_ms)
            if kind is int and time_ms >= _UINT64_MIN  # and <= _INT_MAX: checked above
            else dumps(time_ms)
        )
        head = _OWNED_HEAD + stamp + b"\x81" if owned else b"\x83\x01" + stamp
        return head + (dumps(plain) if body is None else body), doc
    return codec.encode_plain(doc), None


_SCALE_TAG = command_type_tag(ScaleWorkload)


def _exact_scale(envelope: Envelope, command: ScaleWorkload) -> tuple[dict[str, Any], bytes] | None:
    """``envelope_to_plain(envelope)`` for a scale if that round-trips exactly (exact
    ``str`` id, client id and owner; exact ``int`` replicas, expected version and seq within
    CBOR's range; the same keys in the same order), and its ``cbor2.dumps`` bytes (each map's
    head and keys constant, each value by ``_text`` or ``_int``: about 0.2 µs less than
    cbor2's, session 31); else None (the general path decides, and raises what it raises: a string
    UTF-8 cannot encode)."""
    workload, replicas, expected = command.id, command.replicas, command.expected_version
    client_id, seq, owner = envelope.client_id, envelope.seq, envelope.owner
    if not (
        type(workload) is str
        and type(replicas) is int
        and _INT_MIN <= replicas <= _INT_MAX
        and (client_id is None or type(client_id) is str)
        and (owner is None or type(owner) is str)
    ):
        return None
    try:
        body: dict[str, Any] = {"type": _SCALE_TAG, "id": workload, "replicas": replicas}
        parts = [b"", _text(workload), _REPLICAS, _int(replicas)]  # [0]: see below
        if expected is not None:
            if type(expected) is not int or not _INT_MIN <= expected <= _INT_MAX:
                return None
            body["expected_version"] = expected
            parts += (_EXPECTED, _int(expected))
        plain: dict[str, Any] = {"v": COMMAND_FORMAT_VERSION, "command": body}
        if client_id is not None:
            plain["client_id"] = client_id
            parts += (_CLIENT_ID, _text(client_id))
        if seq is not None:
            if type(seq) is not int or not _INT_MIN <= seq <= _INT_MAX:
                return None
            plain["seq"] = seq
            parts += (_SEQ, _int(seq))
        if owner is not None:
            plain["owner"] = owner
            parts += (_OWNER, _text(owner))
    except UnicodeEncodeError:
        return None
    # the two maps' heads (their sizes known now), the keys and values before the id's
    parts[0] = _MAP_HEADS[len(plain)] + _V_COMMAND + _MAP_HEADS[len(body)] + _SCALE_ID
    return plain, b"".join(parts)


_MAP_HEADS = [bytes([0xA0 + n]) for n in range(24)]  # a CBOR map of n < 24 pairs
_V_COMMAND = b"".join(map(cbor2.dumps, ["v", COMMAND_FORMAT_VERSION, "command"]))
_SCALE_ID = b"".join(map(cbor2.dumps, ["type", _SCALE_TAG, "id"]))
_REPLICAS, _EXPECTED, _CLIENT_ID, _SEQ, _OWNER = map(
    cbor2.dumps, ["replicas", "expected_version", "client_id", "seq", "owner"]
)
_TEXT_HEADS = [bytes([0x60 + n]) for n in range(24)]  # a CBOR text of n < 24 bytes
_INTS = [cbor2.dumps(n) for n in range(24)]
_pack_uint16 = struct.Struct(">BH").pack
_pack_uint32 = struct.Struct(">BI").pack


def _text(text: str) -> bytes:
    """``cbor2.dumps(text)`` (UTF-8, its length's shortest head)."""
    data = text.encode()
    size = len(data)
    if size < 24:
        return _TEXT_HEADS[size] + data
    if size < 0x100:
        return bytes([0x78, size]) + data
    return cbor2.dumps(text)


def _int(n: int) -> bytes:
    """``cbor2.dumps(n)`` (the shortest head) for an int within CBOR's range."""
    if 0 <= n < 24:
        return _INTS[n]
    if 0 <= n < 0x10000:
        return bytes([0x18, n]) if n < 0x100 else _pack_uint16(0x19, n)
    if 0 <= n < 0x100000000:
        return _pack_uint32(0x1A, n)
    return cbor2.dumps(n)


def is_owned(payload: bytes) -> bool:
    """Is this single-command payload (``encode_payload_doc``'s) of version 3 (an owner)?"""
    return payload[:2] == _OWNED_HEAD


_OWNED_HEAD = b"\x83\x03"  # a CBOR array of 3 items, then the unsigned integer 3


def any_owned(payloads: Iterable[bytes]) -> bool:
    """Is any of these single-command payloads ``is_owned``? (One set of their heads: this
    runs on every batch.)"""
    return _OWNED_HEAD in {payload[:2] for payload in payloads}


def without_owner(payload: bytes, doc: list[Any] | None) -> tuple[bytes, list[Any] | None]:
    """A single-command version-3 payload (``encode_payload_doc``'s) as it is written when the
    owner may not travel: the same command and time, no owner, version 1."""
    if doc is None:
        doc = codec.decode_plain(payload, max_size=MAX_PAYLOAD_BYTES)
    envelope = envelope_from_plain(doc[2][0], owners=True)
    return encode_payload_doc(attrs.evolve(envelope, owner=None), doc[1])


def round_trips_exactly(obj: Any, depth: int) -> bool:
    """Does CBOR turn ``obj`` back into an equal value of the same types? (Exact built-in
    types only, integers within CBOR's 64-bit range: what ``codec.encode_plain`` accepts of
    them.) Scalar members of a container are checked in place: this runs on every
    proposal."""
    t = type(obj)
    if t is dict:
        if depth <= 0:
            return False
        for key, value in obj.items():
            if type(key) is not str:
                return False
            vt = type(value)
            if vt in _EXACT_NON_INT:
                continue
            if vt is int:
                if not _INT_MIN <= value <= _INT_MAX:
                    return False
            elif not round_trips_exactly(value, depth - 1):
                return False
        return True
    if t is list:
        if depth <= 0:
            return False
        kinds = set(map(type, obj))
        if _EXACT_NON_INT.issuperset(kinds):
            return True
        if _EXACT_SCALARS.issuperset(kinds):  # ints among them: one min/max, not a call each
            ints = [item for item in obj if type(item) is int]
            return min(ints) >= _INT_MIN and max(ints) <= _INT_MAX
        for item in obj:
            it = type(item)
            if it in _EXACT_NON_INT:
                continue
            if it is int:
                if not _INT_MIN <= item <= _INT_MAX:
                    return False
            elif not round_trips_exactly(item, depth - 1):
                return False
        return True
    if t is int:
        return bool(_INT_MIN <= obj <= _INT_MAX)
    return t in _EXACT_SCALARS


def batch_payload(docs: Sequence[list[Any]], payloads: Sequence[bytes]) -> tuple[bytes, list[Any]]:
    """A batch payload carrying the commands of these single-command payloads (each encoded by
    ``encode_payload_doc``, whose exact document is in ``docs``), stamped with the latest of
    their times; and its document. Version 2 if they are all of version 1, else version 3
    (some carry an owner). The bytes are the payloads' envelope bytes spliced under a new
    header (CBOR arrays of definite length are their header followed by their items), so
    ``decode_plain(bytes) == document``."""
    time_ms = max([doc[1] for doc in docs])
    owned = OWNER_VERSION in [doc[0] for doc in docs]
    version = OWNER_VERSION if owned else BATCH_VERSION
    parts = [b"\x83" + bytes([version]), codec.encode_plain(time_ms), _array_head(len(payloads))]
    envelopes: list[Any] = []
    add_part, add_envelope = parts.append, envelopes.append
    # The head of the previous payload's (version, time): a frame's payloads share them.
    last: tuple[Any, Any] | None = None
    head, cut = b"", 0
    for doc, payload in zip(docs, payloads, strict=True):
        doc_version, doc_time = doc[0], doc[1]
        if last is None or last[0] != doc_version or last[1] != doc_time:
            head = _single_head(doc_version, doc_time)
            cut, last = len(head), (doc_version, doc_time)
        if not payload.startswith(head):  # not encode_payload's: cannot happen
            raise ValueError("not a single-command payload")
        add_part(payload[cut:])
        add_envelope(doc[2][0] if doc_version == OWNER_VERSION else doc[2])
    return b"".join(parts), [version, time_ms, envelopes]


def _single_head(version: int, time_ms: int) -> bytes:
    """The bytes of ``[1, time_ms, envelope]`` or ``[3, time_ms, [envelope]]`` before the
    envelope's."""
    if version == OWNER_VERSION:
        return b"\x83\x03" + codec.encode_plain(time_ms) + b"\x81"
    if version == PAYLOAD_VERSION:
        return b"\x83\x01" + codec.encode_plain(time_ms)
    raise ValueError(f"not a single-command payload version: {version!r}")


def _array_head(n: int) -> bytes:
    """The CBOR header of an array of ``n`` items (major type 4)."""
    if n < 24:
        return bytes([0x80 + n])
    if n < 0x100:
        return bytes([0x98, n])
    if n < 0x10000:
        return b"\x99" + n.to_bytes(2, "big")
    return b"\x9a" + n.to_bytes(4, "big")


# A decoded entry: its commands (a string where a command's envelope is invalid: that
# command's error), the leader's time, and whether it is a batch entry (version 2, or 3 with
# several commands).
Decoded = tuple[list[Envelope | str], int, bool]


def decode_entry(data: bytes, max_version: int = MAX_PAYLOAD_VERSION) -> Decoded | str:
    """(commands, time_ms, batched) of an entry payload of either version, or a one-line
    reason why ``data`` is not a valid payload (every command of the entry fails alike).
    Raises ``UnsupportedPayloadVersion`` for a version above ``max_version`` (see the module
    docstring: the node must stop).

    ``codec.decode_plain``'s two steps, the strict decoding and the check that the item is
    plain data, with the check skipped for an entry whose every envelope the apply path's
    fast read takes whole (``plain.envelope_plain_fast``; round 18 for batch entries, session
    28 for single commands too): those maps are plain data (exact ``str`` keys and
    ``str``/``int``/None values), and so is the rest of such an entry (its version and time
    ``int``), so the check would pass; any other entry is checked before it is read, as ever:
    the same answer for every payload (tests/runtime/test_payload_fast_entry.py)."""
    try:
        doc: Any = strict_load(
            data, max_size=MAX_PAYLOAD_BYTES, max_depth=DEFAULT_MAX_DEPTH, what="plain frame"
        )
    except ProtocolError as exc:
        return f"entry payload is not valid CBOR: {exc}"
    fast = _fast_entry(doc, max_version)
    if fast is not None:
        return fast
    try:
        check_plain(doc, max_depth=DEFAULT_MAX_DEPTH)
    except ProtocolError as exc:
        return f"entry payload is not valid CBOR: {exc}"
    return _entry_from_doc(doc, max_version)


def _fast_entry(doc: Any, max_version: int) -> Decoded | None:
    """``_entry_from_doc(doc)`` for an entry of a version this node applies whose every
    envelope ``envelope_plain_fast`` reads: a batch entry (version 2, or 3 with several
    commands) or a single command (version 1, or 3 with one: as ``_entry_from_doc`` answers
    those, unbatched); else None (the general path decides)."""
    if type(doc) is not list or len(doc) != 3:
        return None
    version, time_ms, plains = doc
    if type(version) is not int or version > max_version or type(time_ms) is not int:
        return None
    if time_ms < 0:
        return None
    if version == PAYLOAD_VERSION:  # one command, its envelope in place of the list
        one = _fast_envelopes([plains], False)
        return None if one is None else (one, time_ms, False)
    if version == BATCH_VERSION:
        owners = False
    elif version == OWNER_VERSION:
        owners = True
    else:
        return None
    if type(plains) is not list or not plains:
        return None
    commands = _fast_envelopes(plains, owners)
    if commands is None:
        return None
    # one command of version 3 applies as a version-1 entry does; version 2 is a batch always
    return commands, time_ms, not owners or len(commands) > 1


def _slot_setters(cls: type[Any]) -> dict[str, Any]:
    """Each field's slot setter of a class ``slot_builder`` builds (its checks: no converter,
    validator, hook or post-init), by field name."""
    slot_builder(cls)
    return {field.name: cls.__dict__[field.name].__set__ for field in attrs.fields(cls)}


_SCALE_SET = _slot_setters(ScaleWorkload)
_ENVELOPE_SET = _slot_setters(Envelope)


def _fast_envelopes(plains: list[Any], owners: bool) -> list[Envelope | str] | None:
    """``[envelope_plain_fast(plain, owners) for plain in plains]``, None if any is None.

    The bench's and a client's common command, a keyed scale (``{"v": 1, "command": {"type":
    "scale-workload", "id": str, "replicas": int}, "client_id": str, "seq": int}``, plus an
    ``"owner": str`` with ``owners``), is read here in place: the same checks as the fast
    read's (exact key count, every key present, exact types), the command and the envelope
    built slot by slot as its builders do, no call per command (session 31: every follower
    runs this per command of every entry). Any other envelope takes ``envelope_plain_fast``.
    The same answer for every input (tests/runtime/test_payload_fast_entry.py)."""
    commands: list[Envelope | str] = []
    append = commands.append
    new = object.__new__
    scale, envelope_cls = ScaleWorkload, Envelope
    set_id, set_replicas = _SCALE_SET["id"], _SCALE_SET["replicas"]
    set_expected = _SCALE_SET["expected_version"]
    set_command, set_client = _ENVELOPE_SET["command"], _ENVELOPE_SET["client_id"]
    set_seq, set_owner = _ENVELOPE_SET["seq"], _ENVELOPE_SET["owner"]
    width = 5 if owners else 4  # v, command, client_id, seq (, owner)
    for value in plains:
        if type(value) is dict and len(value) == width:
            try:  # every key present (len: no other), each looked up once
                version, plain = value["v"], value["command"]
                client_id, seq = value["client_id"], value["seq"]
                owner = value["owner"] if owners else None
                if type(plain) is dict and len(plain) == 3:
                    tag, workload, replicas = plain["type"], plain["id"], plain["replicas"]
                else:
                    tag = workload = replicas = None
            except KeyError:
                pass
            else:
                if (
                    type(tag) is str
                    and tag == _SCALE_TAG
                    and type(workload) is str
                    and type(replicas) is int
                    and type(version) is int
                    and version == COMMAND_FORMAT_VERSION
                    and type(client_id) is str
                    and type(seq) is int
                    and (owner is None or type(owner) is str)
                ):
                    command = new(scale)
                    set_id(command, workload)
                    set_replicas(command, replicas)
                    set_expected(command, None)
                    envelope = new(envelope_cls)
                    set_command(envelope, command)
                    set_client(envelope, client_id)
                    set_seq(envelope, seq)
                    set_owner(envelope, owner)
                    append(envelope)
                    continue
        read = envelope_plain_fast(value, owners)
        if read is None:
            return None
        append(read)
    return commands


def decode_own_entry(
    data: bytes, doc: list[Any] | None, max_version: int = MAX_PAYLOAD_VERSION
) -> Decoded | str:
    """``decode_entry(data)`` for an entry this node encoded (``encode_payload_doc``,
    ``batch_payload``), read from ``doc`` when it may be: no CBOR decoding."""
    if doc is None or len(data) > MAX_PAYLOAD_BYTES:
        return decode_entry(data, max_version)
    # envelopes the fast read takes (round 18; session 28: single commands too): what
    # _entry_from_doc reads of them
    return _fast_entry(doc, max_version) or _entry_from_doc(doc, max_version)


def _entry_from_doc(doc: Any, max_version: int = MAX_PAYLOAD_VERSION) -> Decoded | str:
    if isinstance(doc, list) and len(doc) == 3 and type(doc[0]) is int and doc[0] > max_version:
        raise UnsupportedPayloadVersion(doc[0], max_version)
    if isinstance(doc, list) and len(doc) == 3 and doc[0] == BATCH_VERSION and type(doc[0]) is int:
        _, time_ms, plains = doc
        if not isinstance(time_ms, int) or isinstance(time_ms, bool) or time_ms < 0:
            return "entry payload time is not a non-negative integer"
        if not isinstance(plains, list) or not plains:
            return "entry payload of version 2 carries no list of commands"
        return [_envelope(plain) for plain in plains], time_ms, True
    if isinstance(doc, list) and len(doc) == 3 and doc[0] == OWNER_VERSION and type(doc[0]) is int:
        _, time_ms, plains = doc
        if not isinstance(time_ms, int) or isinstance(time_ms, bool) or time_ms < 0:
            return "entry payload time is not a non-negative integer"
        if not isinstance(plains, list) or not plains:
            return "entry payload of version 3 carries no list of commands"
        commands = [_envelope(plain, owners=True) for plain in plains]
        if len(commands) == 1:  # one command: as a version-1 entry (a bad one fails whole)
            return (commands, time_ms, False) if not isinstance(commands[0], str) else commands[0]
        return commands, time_ms, True
    one = _from_doc(doc)
    if isinstance(one, str):
        return one
    return [one[0]], one[1], False


def _envelope(plain: Any, owners: bool = False) -> Envelope | str:
    try:
        return envelope_from_plain(plain, owners=owners)
    except ProtocolError as exc:
        return f"command is not valid CBOR: {exc}"
    except (ValueError, TypeError, KeyError) as exc:
        return f"command is not valid: {exc}"


def decode_payload(data: bytes) -> tuple[Envelope, int] | str:
    """(envelope, time_ms), or a one-line reason why ``data`` is not a valid payload."""
    try:
        doc: Any = codec.decode_plain(data, max_size=MAX_PAYLOAD_BYTES)
    except ProtocolError as exc:
        return f"entry payload is not valid CBOR: {exc}"
    return _from_doc(doc)


def decode_own_payload(data: bytes, doc: list[Any] | None) -> tuple[Envelope, int] | str:
    """``decode_payload(data)`` for an entry this node encoded with ``encode_payload_doc``,
    read from ``doc`` (what it returned with ``data``) when it may be: no CBOR decoding."""
    if doc is None or len(data) > MAX_PAYLOAD_BYTES:
        return decode_payload(data)
    return _from_doc(doc)


def _from_doc(doc: Any) -> tuple[Envelope, int] | str:
    try:
        if not (isinstance(doc, list) and len(doc) == 3 and doc[0] == PAYLOAD_VERSION):
            return "entry payload is not [version 1, time, envelope]"
        _, time_ms, plain = doc
        if not isinstance(time_ms, int) or isinstance(time_ms, bool) or time_ms < 0:
            return "entry payload time is not a non-negative integer"
        return envelope_from_plain(plain), time_ms
    except ProtocolError as exc:
        return f"entry payload is not valid CBOR: {exc}"
    except (ValueError, TypeError, KeyError) as exc:
        return f"entry payload is not a valid command: {exc}"
