"""Round 18 (s18-apply): ``decode_entry`` skips ``codec.decode_plain``'s plain-data check for a
batch entry whose every envelope the fast read takes whole (univrs/runtime/payload.py), and
since session 28 for a single-command entry (version 1, or 3 with one command) alike. The
rule: the same answer as the decoding it replaced (``decode_plain`` then ``_entry_from_doc``,
written here) for every payload: batch entries of scales and of other commands, envelopes with
a key too many, a bool for an int, an owner where none may be, values that are not plain
data (CBOR ``undefined``, simple values, a float or an array as a map key) at every level,
every payload version, with the unsupported-version stop alike."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from univrs import codec
from univrs.errors import ProtocolError
from univrs.runtime.payload import (
    MAX_PAYLOAD_BYTES,
    UnsupportedPayloadVersion,
    _entry_from_doc,
    decode_entry,
    decode_own_entry,
)


def _reference(data: bytes, max_version: int) -> Any:
    try:
        doc = codec.decode_plain(data, max_size=MAX_PAYLOAD_BYTES)
    except ProtocolError as exc:
        return f"entry payload is not valid CBOR: {exc}"
    return _entry_from_doc(doc, max_version)


def _outcome(decode: Any, data: bytes, max_version: int) -> Any:
    try:
        return ("ok", decode(data, max_version))
    except UnsupportedPayloadVersion as exc:
        return ("stop", str(exc))


NOT_PLAIN = [cbor2.undefined, cbor2.CBORSimpleValue(7), 1.5]
scalars = st.one_of(
    st.text(max_size=4), st.integers(-3, 2**64 - 1), st.none(), st.booleans(), st.just(b"x")
)
odd = st.one_of(scalars, st.sampled_from(NOT_PLAIN))
ids = st.sampled_from(["w0", "c-1", "", 7, True, None])


@st.composite
def commands(draw: Any) -> dict[Any, Any]:
    kind = draw(st.sampled_from(["scale-workload", "delete-workload", "create-workload", "x"]))
    command: dict[Any, Any] = {"type": kind, "id": draw(ids)}
    if kind == "scale-workload":
        command["replicas"] = draw(st.one_of(st.integers(0, 5), odd))
    if kind == "create-workload":
        command["spec"] = {"name": "web", "image": "nginx:1", "replicas": draw(odd)}
    if draw(st.integers(0, 5)) == 0:
        command["expected_version"] = draw(odd)
    if draw(st.integers(0, 8)) == 0:
        command[draw(st.sampled_from(["extra", 1.5, 3]))] = draw(odd)
    return command


@st.composite
def envelopes(draw: Any) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(odd)
    envelope: dict[Any, Any] = {"v": draw(st.one_of(st.just(1), st.just(1), odd))}
    envelope["command"] = draw(commands())
    if draw(st.booleans()):
        envelope["client_id"] = draw(st.one_of(st.just("c-1"), odd))
        envelope["seq"] = draw(st.one_of(st.integers(1, 9), odd))
    if draw(st.integers(0, 4)) == 0:
        envelope["owner"] = draw(st.one_of(st.just("alice"), odd))
    if draw(st.integers(0, 10)) == 0:
        envelope[draw(st.sampled_from(["other", 2.5, 0]))] = draw(odd)
    return envelope


@st.composite
def clean(draw: Any) -> dict[str, Any]:
    """A well-formed envelope of a command the fast read takes (scale, delete)."""
    command: dict[str, Any] = {"type": "scale-workload", "id": draw(st.text(max_size=3))}
    command["replicas"] = draw(st.integers(0, 2**64 - 1))
    if draw(st.booleans()):
        command = {"type": "delete-workload", "id": "w"}
    if draw(st.booleans()):
        command["expected_version"] = draw(st.integers(0, 9))
    envelope: dict[str, Any] = {"v": 1, "command": command}
    if draw(st.booleans()):
        envelope.update(client_id=draw(st.text(max_size=3)), seq=draw(st.integers(0, 9)))
    if draw(st.booleans()):
        envelope["owner"] = "alice"
    return envelope


@st.composite
def payloads(draw: Any) -> bytes:
    version = draw(st.sampled_from([1, 2, 2, 2, 3, 3, 3, 4, 0, True]))
    time_ms = draw(st.one_of(st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 9), odd))
    if draw(st.booleans()):  # mostly what the fast read takes, maybe one odd envelope
        items = draw(st.lists(clean(), min_size=1, max_size=5))
        if version != 3 and draw(st.integers(0, 9)):  # an owner only in version 3, mostly
            for item in items:
                item.pop("owner", None)
        if draw(st.integers(0, 2)) == 0:
            items[draw(st.integers(0, len(items) - 1))] = draw(envelopes())
    else:
        items = draw(st.lists(envelopes(), min_size=0, max_size=5))
    body: Any = items
    if version == 1:
        body = items[0] if items else draw(odd)
    if draw(st.integers(0, 15)) == 0:
        body = draw(odd)
    doc: Any = [version, time_ms, body]
    if draw(st.integers(0, 20)) == 0:
        doc.append(0)
    if draw(st.integers(0, 20)) == 0:
        doc = {"v": doc}
    try:
        data = cbor2.dumps(doc)
    except (TypeError, ValueError, cbor2.CBOREncodeError):
        data = cbor2.dumps([2, 1, []])
    if draw(st.integers(0, 25)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


@settings(max_examples=1500)
@given(payloads(), st.sampled_from([1, 2, 3]))
def test_decode_entry_answers_as_decode_plain_then_the_document(
    data: bytes, max_version: int
) -> None:
    assert _outcome(decode_entry, data, max_version) == _outcome(_reference, data, max_version)


def test_a_batch_of_scales_takes_the_fast_read_and_anything_odd_does_not() -> None:
    command: dict[str, Any] = {"type": "scale-workload", "id": "w", "replicas": 2}
    scale: dict[str, Any] = {"v": 1, "command": command}
    keyed = {**scale, "client_id": "c-1", "seq": 4}
    for doc in ([2, 5, [scale, keyed]], [3, 5, [{**keyed, "owner": "a"}, scale]]):
        data = cbor2.dumps(doc)
        assert decode_entry(data) == _reference(data, 3)
        assert not isinstance(decode_entry(data), str)
    # a value that is not plain data in an envelope the fast read would take otherwise: the
    # whole entry refused by the plain check, as before (not the one command)
    bad = {**scale, "command": {**command, "id": cbor2.undefined}}
    data = cbor2.dumps([2, 5, [scale, bad]])
    assert decode_entry(data) == _reference(data, 3)
    assert isinstance(decode_entry(data), str) and "not valid CBOR" in str(decode_entry(data))


@st.composite
def batches(draw: Any) -> bytes:
    """Batch entries the fast read mostly takes: versions 2 and 3, an int time, clean
    envelopes, now and then one odd envelope among them."""
    version = draw(st.sampled_from([2, 3]))
    items: list[Any] = draw(st.lists(clean(), min_size=1, max_size=6))
    if version == 2:
        for item in items:
            item.pop("owner", None)
    if draw(st.integers(0, 2)) == 0:
        items[draw(st.integers(0, len(items) - 1))] = draw(envelopes())
    return cbor2.dumps([version, draw(st.integers(0, 2**40)), items])


@settings(max_examples=800)
@given(batches(), st.sampled_from([2, 3]))
def test_batch_entries_decode_as_decode_plain_then_the_document(
    data: bytes, max_version: int
) -> None:
    _check_against_the_reference(data, max_version)


def _check_against_the_reference(data: bytes, max_version: int) -> None:
    """``decode_entry`` and ``decode_own_entry`` answer ``data`` as the general reading does
    (``decode_plain``, then the document)."""
    reference = _outcome(_reference, data, max_version)
    assert _outcome(decode_entry, data, max_version) == reference
    try:  # the leader's own entries: read from their (plain) document
        doc = codec.decode_plain(data, max_size=MAX_PAYLOAD_BYTES)
    except ProtocolError:
        return
    own = _outcome(lambda d, mv: decode_own_entry(d, doc, mv), data, max_version)
    assert own == reference


@st.composite
def singles(draw: Any) -> bytes:
    """Single-command entries the fast read mostly takes (session 28): version 1 with its
    envelope in place, version 3 with a list of one; now and then an odd envelope, time or
    version."""
    version = draw(st.sampled_from([1, 1, 3, 3, 2, True]))
    item: Any = draw(clean())
    if version != 3 and draw(st.integers(0, 9)):
        item.pop("owner", None)
    if draw(st.integers(0, 3)) == 0:
        item = draw(envelopes())
    time_ms = draw(st.one_of(st.integers(0, 2**40), st.integers(0, 2**40), odd))
    return cbor2.dumps([version, time_ms, item if version == 1 else [item]])


@settings(max_examples=800)
@given(singles(), st.sampled_from([1, 2, 3]))
def test_single_entries_decode_as_decode_plain_then_the_document(
    data: bytes, max_version: int
) -> None:
    _check_against_the_reference(data, max_version)


# Session 31: a keyed scale, the common command, is read in place (``payload._fast_envelopes``);
# each mutation below makes it one the in-place read must not take as it is (a value of
# another type, a key swapped for another at the same count, a key missing or too many).
MUTATIONS = ["none", "value", "swap", "drop", "extra", "tag", "command-key", "command-drop"]
near_values = st.one_of(
    odd, st.just(1.0), st.just(b"scale-workload"), st.just([]), st.just({}), st.just("1")
)


@st.composite
def keyed_scales(draw: Any, owners: bool) -> dict[Any, Any]:
    """A keyed scale envelope (with an owner if ``owners``, mostly), maybe mutated once."""
    command: dict[Any, Any] = {
        "type": "scale-workload",
        "id": draw(st.text(max_size=3)),
        "replicas": draw(st.integers(-3, 2**64 - 1)),
    }
    envelope: dict[Any, Any] = {
        "v": 1,
        "command": command,
        "client_id": draw(st.text(max_size=3)),
        "seq": draw(st.integers(0, 2**64 - 1)),
    }
    if owners and draw(st.integers(0, 5)):
        envelope["owner"] = draw(st.one_of(st.text(max_size=3), st.none()))
    mutation = draw(st.sampled_from(MUTATIONS))
    keys = sorted(envelope, key=str)
    if mutation == "value":
        target = draw(st.sampled_from([*keys, "command.id", "command.replicas", "command.type"]))
        where, _, key = target.rpartition(".")
        (command if where else envelope)[key] = draw(near_values)
    elif mutation == "swap":  # one key replaced by another, the count kept
        value = envelope.pop(draw(st.sampled_from(keys)))
        envelope[draw(st.sampled_from(["owner", "other", 1, "expected_version"]))] = value
    elif mutation == "drop":
        del envelope[draw(st.sampled_from(keys))]
    elif mutation == "extra":
        envelope[draw(st.sampled_from(["owner", "other", 2.5]))] = draw(near_values)
    elif mutation == "tag":
        command["type"] = draw(st.sampled_from(["delete-workload", "scale-workloadx", "", 3]))
    elif mutation == "command-key":
        command[draw(st.sampled_from(["expected_version", "other", 0]))] = draw(
            st.one_of(st.integers(0, 9), near_values)
        )
    elif mutation == "command-drop":
        del command[draw(st.sampled_from(["id", "replicas", "type"]))]
        command[draw(st.sampled_from(["expected_version", "x"]))] = 1
    return envelope


@st.composite
def scale_entries(draw: Any) -> bytes:
    """Entries of keyed scales, their near misses now and then: versions 1, 2 and 3."""
    version = draw(st.sampled_from([1, 2, 3]))
    items = draw(st.lists(keyed_scales(version == 3), min_size=1, max_size=6))
    body = items[0] if version == 1 else items
    return cbor2.dumps([version, draw(st.integers(0, 2**40)), body])


@settings(max_examples=1500)
@given(scale_entries(), st.sampled_from([1, 2, 3]))
def test_keyed_scales_and_their_near_misses_decode_as_the_reference(
    data: bytes, max_version: int
) -> None:
    _check_against_the_reference(data, max_version)


def test_a_batch_of_keyed_scales_is_read_in_place(monkeypatch: Any) -> None:
    """The common shape does not reach the per-envelope read (which would still answer
    alike): the in-place read takes it whole, owners or not."""
    import univrs.runtime.payload as payload_module

    monkeypatch.setattr(payload_module, "envelope_plain_fast", lambda *_: None)
    keyed = {"v": 1, "command": {"type": "scale-workload", "id": "w", "replicas": 2}}
    keyed.update(client_id="c-1", seq=4)
    for doc in ([2, 5, [keyed, keyed]], [3, 5, [{**keyed, "owner": "a"}] * 2], [1, 5, keyed]):
        data = cbor2.dumps(doc)
        decoded = payload_module._fast_entry(cbor2.loads(data), 3)
        assert decoded is not None
        assert decoded == _reference(data, 3)
