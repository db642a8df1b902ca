"""Seeded mutation fuzzing of every decoder of bytes from the network (s16-fuzz): the raft
hello, the probe question and answer, the fast protocol's client hello and request frames, and
raft message and batch frames.

Each valid frame is mutated as a document (a key or item given a value of a wrong type: None,
booleans, negative and 64-bit-edge integers, bignums, NaN, empty, huge and control-character
strings, bytes, nested lists and maps, CBOR tags, simple values, undefined; a key or item
dropped or added) or as bytes (a byte changed, cut short, trailing bytes, an indefinite-length
or tag head put in, a map with a duplicated key in front). A decoder must return a value or
raise ``ProtocolError``; anything else (a TypeError, a KeyError, a RecursionError...) would
escape its connection's handler. ``UNIVRS_FUZZ_ROUNDS=N`` sets the cases per decoder (default
500: about 3,500 in all), ``UNIVRS_FUZZ_SEED`` the seed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from univrs.client.protocol import check_client_hello, decode_requests, encode_client_hello
from univrs.codec import decode_frame, encode_message
from univrs.codec.messages import encode_batch
from univrs.errors import ProtocolError
from univrs.net.hello import WIRE_VERSION, Hello, decode_hello, encode_hello
from univrs.net.probe import (
    ProbeAnswer,
    ProbeQuestion,
    decode_answer,
    decode_question,
    encode_answer,
    encode_question,
)
from univrs.raft.messages import AppendEntries, Entry, Heartbeat, RequestVote

ROUNDS = int(os.environ.get("UNIVRS_FUZZ_ROUNDS", "500"))
SEED = os.environ.get("UNIVRS_FUZZ_SEED", "16")
KEYS = [
    "hello", "version", "src", "dst", "cluster", "incarnation", "start", "seen", "cfg",
    "univrs", "v", "token", "probe", "id", "op", "args", "x", 1, -1, b"k", 2.5, None, True,
]  # fmt: skip


def hostile(rng: random.Random, depth: int = 0) -> Any:
    c = rng.randrange(13)
    if c == 0:
        return None
    if c == 1:
        return rng.choice([True, False])
    if c == 2:
        return rng.choice([-1, 2**63 - 1, 2**64 - 1, -(2**64), 2**64, 2**200, -(2**200)])
    if c == 3:
        return rng.choice([float("nan"), float("inf"), -0.0, 1e308])
    if c == 4:
        return rng.choice(["", "\x00", "a" * 5000, "\u202e", "\U0001f600", "n1", ":"])
    if c == 5:
        return rng.choice([b"", b"\x00" * 64, b"x" * 5000])
    if c == 6 and depth < 4:
        return [hostile(rng, depth + 1) for _ in range(rng.randrange(4))]
    if c == 7 and depth < 4:
        return {rng.choice(KEYS): hostile(rng, depth + 1) for _ in range(rng.randrange(3))}
    if c == 8:
        return cbor2.CBORTag(rng.choice([0, 1, 2, 24, 258, 55799, 2**32]), rng.choice([1, "x"]))
    if c == 9:
        return cbor2.CBORSimpleValue(rng.choice([0, 19, 32, 255]))
    if c == 10:
        return cbor2.undefined
    if c == 11:
        return list(range(rng.choice([0, 300, 5000])))
    return rng.randrange(-5, 10)


def mutate_document(rng: random.Random, raw: bytes) -> bytes:
    doc = cbor2.loads(raw)
    for _ in range(rng.randrange(1, 3)):
        if isinstance(doc, dict):
            key = rng.choice([*doc, rng.choice(KEYS)])
            if rng.random() < 0.15:
                doc.pop(key, None)
            else:
                doc[key] = hostile(rng)
        elif isinstance(doc, list) and doc:
            i = rng.randrange(len(doc))
            op = rng.randrange(4)
            if op == 0:
                doc.pop(i)
            elif op == 1:
                doc.append(hostile(rng))
            elif op == 2 and isinstance(doc[i], list | dict) and doc[i]:
                inner = doc[i]
                key = rng.randrange(len(inner)) if isinstance(inner, list) else rng.choice([*inner])
                inner[key] = hostile(rng)
            else:
                doc[i] = hostile(rng)
    return cbor2.dumps(doc)


def mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    op = rng.randrange(6)
    if op == 0:
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:
        del b[rng.randrange(len(b)) :]
    elif op == 2:
        b[0] = rng.choice([0x9F, 0xBF, 0x5F, 0x7F, 0xC0, 0xD9, 0xF9, 0xFB, 0x1B])
    elif op == 3:
        b += rng.randbytes(rng.randrange(1, 9))
    elif op == 4:
        b.insert(rng.randrange(len(b)), rng.choice([0x9F, 0xFF, 0xC2, 0xBF, 0xF7]))
    else:
        b = bytearray(b"\xa2\x65hello\x01\x65hello\x02") + b
    return bytes(b)


def _frames() -> dict[str, tuple[bytes, Callable[[bytes], object]]]:
    hello = Hello(
        version=WIRE_VERSION, cluster="c", src="n9", dst="n1", incarnation="00" * 8,
        addr="127.0.0.1:7001", config_index=3, bound=True, batch=True, hold=1,
    )  # fmt: skip
    msgs = [
        encode_message(
            AppendEntries(
                term=2, src="n2", dst="n1", prev_log_index=1, prev_log_term=1,
                entries=(Entry(term=2, index=2, data=b"x"),), commit=1,
            )
        ),
        encode_message(Heartbeat(term=2, src="n2", dst="n1", commit=3)),
        encode_message(RequestVote(term=2, src="n2", dst="n1", last_log_index=1, last_log_term=1)),
    ]  # fmt: skip
    requests = cbor2.dumps(
        [
            {"id": 1, "op": "workload.get", "args": {"id": "w1"}},
            {"id": 2, "op": "credits.mint", "args": {"to_peer": "p", "amount": 5}, "idem": "k"},
        ]
    )
    answer = ProbeAnswer(node="n1", same_cluster=True, history=False, member=True, bound="ab")

    def frame(data: bytes) -> object:
        return decode_frame(data, max_size=4 << 20)

    return {
        "raft hello": (encode_hello(hello), decode_hello),
        "probe question": (encode_question(ProbeQuestion(src="n1", cluster="c")), decode_question),
        "probe answer": (encode_answer(answer), decode_answer),
        "client hello": (encode_client_hello("token"), check_client_hello),
        "request frame": (requests, decode_requests),
        "raft message": (msgs[0], frame),
        "raft batch": (encode_batch(msgs), frame),
    }


FRAMES = _frames()


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_mutated_frames_decode_or_raise_protocol_error(name: str) -> None:
    raw, decode = FRAMES[name]
    decode(raw)  # the unmutated frame is valid
    rng = random.Random(f"s16-fuzz {SEED} {name}")
    refused = 0
    for _ in range(ROUNDS):
        data = mutate_document(rng, raw) if rng.random() < 0.6 else mutate_bytes(rng, raw)
        try:
            decode(data)
        except ProtocolError:
            refused += 1
        except Exception as exc:  # the point: anything else escapes a connection's handler
            pytest.fail(f"{name}: {type(exc).__name__}: {exc} on {data[:200]!r}")
    assert refused > ROUNDS // 2  # the mutations mostly break the frame: they are exercised
