"""The bytes of a NORMAL log entry: a state-machine command envelope and a leader-stamped time.

Form (CBOR, via univrs.codec): ``[1, time_ms, envelope_plain]``. The time is the proposing
leader's wall clock in milliseconds; the state machine uses it only for deterministic session
expiry (every replica sees the same number, from the log). Decoding never raises on bad bytes:
a replica must apply every committed entry, so a bad payload yields an error response instead.

The leader's own entries (issue 14: do not re-decode them at apply). ``encode_payload_doc``
also returns the plain document it encoded when that document *round-trips exactly*: it holds
only exact ``str``, ``int``, ``bool``, ``None``, ``bytes``, ``list`` and ``dict`` with ``str``
keys, nested at most ``EXACT_DEPTH`` deep (no float, tuple, subclass or other key type). CBOR
encodes each of those to an item that the strict decoder turns back into an equal value of
the very same type, so ``decode_plain(encode_plain(doc)) == doc`` with identical types. The
apply loop then reads the envelope from that document (``decode_own_payload``) instead of
decoding the entry's bytes: the same strict ``envelope_from_plain`` and the same checks as
``decode_payload`` run on an equal value, so the leader applies exactly what its followers
decode from the log (a command of wrong types is refused alike everywhere). Anything else
(no document, a payload over ``MAX_PAYLOAD_BYTES``) takes ``decode_payload``.
"""

from __future__ import annotations

from typing import Any

from univrs import codec
from univrs.errors import ProtocolError
from univrs.sm.commands import Envelope
from univrs.sm.plain import envelope_from_plain, envelope_to_plain

PAYLOAD_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
EXACT_DEPTH = 16  # containers nested deeper than this are decoded from the bytes at apply

_EXACT_SCALARS = frozenset({str, int, bool, type(None), bytes})


def encode_payload(envelope: Envelope, time_ms: int) -> bytes:
    """The entry bytes for ``envelope`` proposed at leader time ``time_ms``."""
    return codec.encode_plain([PAYLOAD_VERSION, time_ms, envelope_to_plain(envelope)])


def encode_payload_doc(envelope: Envelope, time_ms: int) -> tuple[bytes, list[Any] | None]:
    """The entry bytes, and the plain document they encode if it round-trips exactly (see the
    module docstring), else None."""
    doc = [PAYLOAD_VERSION, time_ms, envelope_to_plain(envelope)]
    data = codec.encode_plain(doc)
    return data, (doc if round_trips_exactly(doc, EXACT_DEPTH) else None)


def round_trips_exactly(obj: Any, depth: int) -> bool:
    """Does CBOR turn ``obj`` back into an equal value of the same types? (Exact built-in
    types only; integers are in range, or encoding would have refused them.) Scalar members
    of a container are checked in place: this runs on every proposal."""
    t = type(obj)
    if t is dict:
        if depth <= 0:
            return False
        for key, value in obj.items():
            if type(key) is not str:
                return False
            if type(value) not in _EXACT_SCALARS and not round_trips_exactly(value, depth - 1):
                return False
        return True
    if t is list:
        if depth <= 0:
            return False
        if _EXACT_SCALARS.issuperset(map(type, obj)):
            return True
        for item in obj:
            if type(item) not in _EXACT_SCALARS and not round_trips_exactly(item, depth - 1):
                return False
        return True
    return t in _EXACT_SCALARS


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
