"""The wire codec: strict CBOR for Raft messages and for plain data.

* ``univrs.codec.messages``: every Raft message as one versioned CBOR frame, from one table
  (``encode_message`` / ``decode_message``), several of them in one batch frame
  (``encode_batch`` / ``decode_frame``), and memberships as plain arrays;
* ``univrs.codec.plain``: plain data (client frames, entry payloads, storage records)
  (``encode_plain`` / ``decode_plain``, ``check_plain`` for an item decoded on its own);
* ``univrs.codec.strict``: the strict one-item CBOR loader both decode with (no tags, no
  trailing bytes, bounded size and depth, and for frames from the network a bounded estimate
  of the memory decoding takes, ``frame_cost_bound``; every failure a ``ProtocolError``), and
  ``array_length``, a
  frame's item count read from its head before decoding.

Callers use this package's names (``from univrs import codec; codec.encode_plain(...)``).
"""

from __future__ import annotations

from univrs.codec.messages import (
    WIRE_VERSION,
    decode_frame,
    decode_message,
    encode_batch,
    encode_message,
    membership_from_plain,
    membership_to_plain,
    message_fields,
)
from univrs.codec.plain import DEFAULT_MAX_DEPTH, check_plain, decode_plain, encode_plain
from univrs.codec.strict import array_length, frame_cost_bound

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "WIRE_VERSION",
    "array_length",
    "check_plain",
    "decode_frame",
    "decode_message",
    "decode_plain",
    "encode_batch",
    "encode_message",
    "encode_plain",
    "frame_cost_bound",
    "membership_from_plain",
    "membership_to_plain",
    "message_fields",
]
