"""``decode_frame(..., sender_incarnation=...)`` (session 30): the transport's reader has the
decoder set the incarnation its connection attests on each message it builds, instead of
building each message and then rebuilding it with the incarnation
(``FrameReading._accept_message``, which still sets it on a message that lacks it). The
messages are the ones the old path made, field for field (``sender_incarnation`` included,
which equality ignores), and every frame refused is refused with the same error.
"""

from __future__ import annotations

import attrs
import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_codec import MAX, any_message, mutated
from univrs.codec import decode_frame, encode_batch, encode_message
from univrs.errors import ProtocolError
from univrs.raft import messages as m

INCARNATIONS = st.none() | st.text(min_size=0, max_size=12)


def _fields(msg: m.Message) -> dict[str, object]:
    return {f.name: getattr(msg, f.name) for f in attrs.fields(type(msg))}


def _reference(data: bytes, incarnation: str | None) -> tuple[m.Message, ...] | str:
    """The old path: decode, then rebuild each message with the attested incarnation."""
    try:
        msgs = decode_frame(data, max_size=MAX)
    except ProtocolError as exc:
        return str(exc)
    if incarnation is None:
        return msgs
    return tuple(attrs.evolve(msg, sender_incarnation=incarnation) for msg in msgs)


def _fast(data: bytes, incarnation: str | None) -> tuple[m.Message, ...] | str:
    try:
        return decode_frame(data, max_size=MAX, sender_incarnation=incarnation)
    except ProtocolError as exc:
        return str(exc)


def _same(data: bytes, incarnation: str | None) -> None:
    want, got = _reference(data, incarnation), _fast(data, incarnation)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
        return
    assert [type(x) for x in got] == [type(x) for x in want]
    assert [_fields(x) for x in got] == [_fields(x) for x in want]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_message, min_size=1, max_size=4), INCARNATIONS)
def test_messages_are_those_of_the_old_path(msgs: list[m.Message], incarnation: str | None) -> None:
    frames = [encode_message(msg) for msg in msgs]
    _same(frames[0], incarnation)
    _same(encode_batch(frames), incarnation)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(any_message, INCARNATIONS, st.data())
def test_mutated_frames_decode_or_fail_alike(
    msg: m.Message, incarnation: str | None, data: st.DataObject
) -> None:
    raw = bytearray(encode_message(msg))
    if data.draw(st.booleans()):
        raw = bytearray(encode_batch([bytes(raw), encode_message(msg)]))
    _same(mutated(raw, data), incarnation)


def test_a_wire_frame_cannot_set_the_incarnation() -> None:
    """The incarnation is not on the wire: a frame with one more field is refused, with or
    without an attested incarnation."""
    beat = m.Heartbeat(term=2, src="a", dst="b", commit=1)
    frame = cbor2.loads(encode_message(beat))
    forged = cbor2.dumps([*frame, "forged-incarnation"])
    assert isinstance(_fast(forged, "i-a"), str)
    assert _fast(forged, "i-a") == _reference(forged, "i-a")
    (got,) = decode_frame(encode_message(beat), max_size=MAX, sender_incarnation="i-a")
    assert got.sender_incarnation == "i-a"
    (plain,) = decode_frame(encode_message(beat), max_size=MAX)
    assert plain.sender_incarnation is None
