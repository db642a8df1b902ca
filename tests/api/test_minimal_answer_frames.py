"""A response frame's spliced answers (univrs/client/protocol.py ``encode_responses``, session
31: minimal write answers, and the reads' and full writes' ``Encoded`` answers) against the
general path, cbor2's encoding of the whole frame: the same bytes over many answer shapes,
mixed in random frames. With a fast path diverging (a head, a key order, a shape it should
leave to cbor2), these fail."""

from __future__ import annotations

import random
from typing import Any

import cbor2
import pytest

from univrs.api.answer_frames import encode_frame, response_frames
from univrs.client import protocol
from univrs.client.protocol import Encoded

# Every head size of a CBOR unsigned integer, at both ends.
UINTS = [0, 1, 23, 24, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 64) - 1]
NAMES = [
    "",
    "w",
    "bench-17",
    "x" * 23,
    "x" * 24,
    "y" * 255,
    "y" * 256,
    "z" * 70000,
    "é",
    "w\U0001f600",
]
DOC = Encoded(cbor2.dumps({"id": "w", "spec": {"replicas": 3}, "version": 9}))


def _general(leader: str | None, responses: list[dict[str, Any]]) -> bytes:
    """The frame as cbor2 encodes it whole (an ``Encoded``'s bytes put in as they are)."""
    return cbor2.dumps({"leader": leader, "r": responses}, default=protocol._write_encoded)


def _big(rng: random.Random) -> int:
    return (
        rng.choice(UINTS) if rng.random() < 0.5 else rng.randrange(1 << rng.choice((5, 20, 40, 64)))
    )


def _minimal(rng: random.Random, rid: Any, version: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "ok": {"id": rng.choice(NAMES), "version": version},
        "meta": {"index": version},
    }


def _answer(rng: random.Random) -> dict[str, Any]:
    """One answer of a random shape: mostly the minimal write answer (spliced), and the shapes
    next to it that must be left to cbor2, besides the other answers of a frame."""
    rid = _big(rng)
    version = _big(rng)
    roll = rng.randrange(16)
    if roll < 5:
        return _minimal(rng, rid, version)
    if roll == 5:  # an equal index that is another object: left to cbor2
        return {
            "id": rid,
            "ok": {"id": "w", "version": version + (1 << 70)},
            "meta": {"index": (1 << 70) + version},
        }
    if roll == 6:  # another index
        return {"id": rid, "ok": {"id": "w", "version": version}, "meta": {"index": _big(rng)}}
    if roll == 7:  # the ok's keys in another order (a response's are the server's: see
        # ``encode_responses``, built by ``response_of`` and ``_answered`` in that order)
        return {"id": rid, "ok": {"version": version, "id": "w"}, "meta": {"index": version}}
    if roll == 8:  # values not of the shape: a bool, a negative, past 64 bits, a float, None
        odd = rng.choice([True, False, -1, -(1 << 64), 1 << 64, 1.5, None, "1"])
        return rng.choice(
            [
                _minimal(rng, odd, version),
                _minimal(rng, rid, odd),
                {"id": rid, "ok": {"id": odd, "version": version}, "meta": {"index": version}},
                {"id": rid, "ok": {"id": "w", "version": version}, "meta": {"index": odd}},
            ]
        )
    if roll == 9:  # other maps: more keys, another key, no meta, an extra field
        return rng.choice(
            [
                {
                    "id": rid,
                    "ok": {"id": "w", "version": version},
                    "meta": {"index": version, "x": 1},
                },
                {"id": rid, "ok": {"id": "w", "version": version}, "meta": {"stale": version}},
                {"id": rid, "ok": {"id": "w", "version": version}},
                {
                    "id": rid,
                    "ok": {"id": "w", "version": version},
                    "meta": {"index": version},
                    "x": 1,
                },
                {"id": rid, "ok": {"id": "w", "deleted": True}, "meta": {"index": version}},
                {
                    "id": rid,
                    "ok": {"id": "w", "version": version, "x": 1},
                    "meta": {"index": version},
                },
            ]
        )
    if roll == 10:  # a full write answer (its document encoded), and one with another meta
        return rng.choice(
            [
                {"id": rid, "ok": DOC, "meta": {"index": version}},
                {"id": rid, "ok": DOC, "meta": {"stale": version}},
            ]
        )
    if roll == 11:
        return {"id": rid, "ok": DOC}  # a read's shared rendering
    if roll == 12:
        return {"id": rid, "error": {"code": "not-found", "message": "workload w not found"}}
    if roll == 13:
        return {"id": rid, "ok": None}
    return {"id": rid, "ok": {"items": [1, "a"], "next": None}, "meta": {"index": version}}


@pytest.mark.parametrize("seed", range(8))
def test_random_frames_are_cbor2s(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        leader = rng.choice([None, "n1", "node-with-a-longer-name"])
        responses = [_answer(rng) for _ in range(rng.choice([1, 2, 16, rng.randrange(1, 40)]))]
        frame = protocol.encode_responses(leader, responses)
        assert frame == _general(leader, responses)
        assert encode_frame(leader, responses) == frame


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", UINTS)
def test_every_head_of_a_minimal_answer(name: str, n: int) -> None:
    version = n + 0  # (the index the same object)
    responses = [
        {"id": n, "ok": {"id": name, "version": version}, "meta": {"index": version}},
        {"id": 7, "ok": {"id": name, "version": n}, "meta": {"index": n}},
    ]
    frame = protocol.encode_responses("n1", responses)
    assert frame == _general("n1", responses)
    assert protocol.decode_responses(frame) == ("n1", responses)


def test_a_name_that_is_not_utf8_is_refused_as_by_cbor2() -> None:
    bad = {"id": 1, "ok": {"id": "w\udc80", "version": 5}, "meta": {"index": 5}}
    good = {"id": 2, "ok": {"id": "w", "version": 6}, "meta": {"index": 6}}
    with pytest.raises(ValueError):
        _general("n1", [good, bad])
    with pytest.raises(ValueError):
        protocol.encode_responses("n1", [good, bad])
    # encode_frame answers it with an internal error, the others as they are.
    got = protocol.decode_responses(encode_frame("n1", [good, bad]))[1]
    assert got[0] == good and got[1]["id"] == 1 and got[1]["error"]["code"] == "internal"


def test_a_frame_split_by_its_size_is_cbor2s() -> None:
    # Answers past a frame's size go out in several frames (response_frames), each cbor2's.
    big = "n" * (1 << 18)
    responses = [_minimal(random.Random(i), i, i + 1000) for i in range(40)]
    for r in responses:
        r["ok"]["id"] = big
    frames = list(response_frames("n1", responses, held=protocol.MAX_FRAME + 1))
    assert len(frames) > 1
    got = []
    for frame in frames:
        leader, part = protocol.decode_responses(frame)
        assert frame == _general(leader, part)
        got += part
    assert got == responses
