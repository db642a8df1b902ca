"""A tiny JSON codec for transport tests, independent of univrs.codec (which has its own tests)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from univrs.errors import ProtocolError
from univrs.raft.messages import MESSAGE_TYPES, Entry, EntryKind, Message

_TYPES = {cls.__name__: cls for cls in MESSAGE_TYPES}


def encode(msg: Message) -> bytes:
    fields: dict[str, Any] = {}
    for field in attrs.fields(type(msg)):
        value = getattr(msg, field.name)
        if field.name == "entries":
            value = [[e.term, e.index, int(e.kind), e.data.hex()] for e in value]
        elif isinstance(value, bytes):
            value = value.hex()
        fields[field.name] = value
    return json.dumps({"type": type(msg).__name__, "fields": fields}).encode()


def encode_batch(frames: Sequence[bytes]) -> bytes:
    """Several encoded messages in one frame (the JSON form of a batch frame)."""
    return json.dumps({"batch": [f.decode() for f in frames]}).encode()


def decode(
    data: bytes, *, max_size: int, sender_incarnation: str | None = None
) -> tuple[Message, ...]:
    """(``sender_incarnation`` ignored: the reader sets it, ``FrameReading._accept_message``.)"""
    if len(data) > max_size:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {max_size}")
    try:
        doc = json.loads(data)
    except Exception as exc:
        raise ProtocolError(f"bad test frame: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("batch"), list):
        return tuple(_decode_one(str(item).encode()) for item in doc["batch"])
    return (_decode_one(data),)


def _decode_one(data: bytes) -> Message:
    try:
        doc = json.loads(data)
        cls = _TYPES[doc["type"]]
        fields = dict(doc["fields"])
        if "entries" in fields:
            fields["entries"] = tuple(
                Entry(term=t, index=i, kind=EntryKind(k), data=bytes.fromhex(d))
                for t, i, k, d in fields["entries"]
            )
        if "data" in fields:
            fields["data"] = bytes.fromhex(fields["data"])
        msg = cls(**fields)
    except Exception as exc:
        raise ProtocolError(f"bad test frame: {exc}") from None
    assert isinstance(msg, Message)
    return msg
