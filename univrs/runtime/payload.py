"""The bytes of a NORMAL log entry: a state-machine command envelope and a leader-stamped time.

Form (CBOR, via univrs.codec): ``[1, time_ms, envelope_plain]``. The time is the proposing
leader's wall clock in milliseconds; the state machine uses it only for deterministic session
expiry (every replica sees the same number, from the log). Decoding never raises on bad bytes:
a replica must apply every committed entry, so a bad payload yields an error response instead.
"""

from __future__ import annotations

from typing import Any

from univrs import codec
from univrs.errors import ProtocolError
from univrs.sm.commands import Envelope
from univrs.sm.plain import envelope_from_plain, envelope_to_plain

PAYLOAD_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


def encode_payload(envelope: Envelope, time_ms: int) -> bytes:
    """The entry bytes for ``envelope`` proposed at leader time ``time_ms``."""
    return codec.encode_plain([PAYLOAD_VERSION, time_ms, envelope_to_plain(envelope)])


def decode_payload(data: bytes) -> tuple[Envelope, int] | str:
    """(envelope, time_ms), or a one-line reason why ``data`` is not a valid payload."""
    try:
        doc: Any = codec.decode_plain(data, max_size=MAX_PAYLOAD_BYTES)
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
