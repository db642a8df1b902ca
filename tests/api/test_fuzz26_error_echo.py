"""s26-fuzz: an error answer never carries a frame's worth of the sender's bytes.

Several refusals quote what the client sent: an unknown request field (its ``repr`` in the
message, its ``str`` as ``field``), an unknown operation, an unknown field of the arguments, a
session id. Quoted whole, a 4 MiB request frame holding one request whose unknown field is 4
MiB of NUL bytes became an error answer of 33 MB (``repr`` of bytes: 4 characters a byte, in
the message and again in ``field``): eight times the bytes sent. The fast protocol charges an
error answer ``SMALL_ANSWER`` (128 bytes) of the connection's answer budget
(univrs/api/budget.py), so a client that sends such frames and reads nothing had up to
``MAX_IN_FLIGHT`` (4096) of them held at once on one connection (about 130 GB), far past the
8 MiB the budget promises. The wire form of an error (``error_to_plain``) now holds at most
``MAX_WIRE_MESSAGE`` characters of message and ``MAX_WIRE_FIELD`` of field, and the request
decoder quotes an unknown field by its first characters only (no 16 MB ``repr`` built)."""

from __future__ import annotations

import pathlib

import cbor2
import pytest
import trio

from tests.api.helpers import open_cluster
from univrs.client import protocol
from univrs.client.protocol import BadRequest
from univrs.errors import (
    MAX_WIRE_FIELD,
    MAX_WIRE_MESSAGE,
    InvalidArgument,
    MalformedRequest,
    error_to_plain,
)

# What one error answer may hold (message and field, as characters), whatever was sent.
BOUND = MAX_WIRE_MESSAGE + MAX_WIRE_FIELD


def _wire_size(error: dict[str, object]) -> int:
    return sum(len(v) for k, v in error.items() if k in ("message", "field") and isinstance(v, str))


@pytest.mark.parametrize(
    "key",
    [b"\x00" * (4 * 1024 * 1024 - 64), "\u00ff" * (1024 * 1024), "k" * (4 * 1024 * 1024 - 64)],
    ids=["nul-bytes", "latin1-text", "ascii-text"],
)
def test_an_unknown_request_field_is_quoted_short(key: bytes | str) -> None:
    frame = cbor2.dumps([{"id": 1, "op": "workload.get", key: 1}])
    assert len(frame) <= protocol.MAX_FRAME
    (bad,) = protocol.decode_requests(frame)
    assert type(bad) is BadRequest
    # The exception itself already quotes it short (no repr of megabytes built) ...
    assert len(bad.error.message) <= 400 and len(bad.error.field or "") <= 400
    assert "unknown request field" in bad.error.message
    # ... and the wire form of any error is bounded.
    assert _wire_size(error_to_plain(bad.error)) <= BOUND


def test_the_wire_form_of_any_error_is_bounded() -> None:
    huge = "x" * 5_000_000
    plain = error_to_plain(InvalidArgument(f"unknown field {huge!r}", field=huge))
    assert len(plain["message"]) <= MAX_WIRE_MESSAGE
    assert len(plain["field"]) <= MAX_WIRE_FIELD
    assert plain["message"].startswith("unknown field 'xxx")
    assert plain["code"] == "invalid-argument"
    short = error_to_plain(MalformedRequest("bad thing", field="spec.replicas"))
    assert short == {"code": "malformed-request", "message": "bad thing", "field": "spec.replicas"}


def _request_frames() -> list[bytes]:
    big = "q" * (3 * 1024 * 1024)
    return [
        cbor2.dumps([{"id": 1, "op": "workload.get", b"\x00" * (4 * 1024 * 1024 - 64): 1}]),
        cbor2.dumps([{"id": 2, "op": big, "args": {}}]),  # unknown operation
        cbor2.dumps([{"id": 3, "op": "workload.get", "args": {"id": "w", big: 1}}]),
        cbor2.dumps([{"id": 4, "op": "session.close", "args": {"client_id": big}}]),
        cbor2.dumps(
            [
                {
                    "id": 5,
                    "op": "workload.scale",
                    "args": {"id": "w", "replicas": 1},
                    "key": [big, 1],
                }
            ]
        ),
    ]


async def test_a_node_answers_hostile_quotes_with_small_errors(tmp_path: pathlib.Path) -> None:
    """On a real node's ``/client``: each frame above is answered with one error of bounded
    size (it used to be up to 33 MB, charged 128 bytes of the answer budget)."""
    from trio_websocket import open_websocket_url

    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        url = f"ws://{cluster.client_address(node)}{protocol.PATH}"
        async with open_websocket_url(url, max_message_size=protocol.MAX_FRAME) as ws:
            await ws.send_message(protocol.encode_client_hello())
            protocol.decode_server_hello(await ws.get_message())
            for frame in _request_frames():
                assert len(frame) <= protocol.MAX_FRAME
                await ws.send_message(frame)
                with trio.fail_after(15):
                    answer = await ws.get_message()
                assert len(answer) <= 2 * BOUND, len(answer)
                _, (response,) = protocol.decode_responses(answer)
                assert "error" in response, response
                assert _wire_size(response["error"]) <= BOUND


def test_an_error_answer_is_charged_what_it_quotes() -> None:
    """The answer budget is charged an error's message and field, not a fixed 128 bytes: 4096
    errors quoting 4 KB each held on a connection that reads nothing were 16 MB charged as
    512 KB (its budget is 8 MiB)."""
    from univrs.api.budget import AnswerBudget, AnswerPool
    from univrs.api.fast import SMALL_ANSWER, _ClientConnection

    budget = AnswerBudget(AnswerPool())
    conn = _ClientConnection(
        ws=None,  # type: ignore[arg-type]
        service=None,  # type: ignore[arg-type]
        remote="test",
        scope=None,  # type: ignore[arg-type]
        budget=budget,
        wire=None,  # type: ignore[arg-type]
    )
    quoted = error_to_plain(InvalidArgument("q" * 10_000, field="f" * 10_000))
    conn._send([{"id": 1, "error": quoted}, {"id": 2, "ok": {"n": 1}}])
    size = len(quoted["message"]) + len(quoted["field"])
    assert size > MAX_WIRE_MESSAGE  # (cut at the wire's bounds)
    assert budget.held == 2 * SMALL_ANSWER + size
