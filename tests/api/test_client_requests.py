"""The client library's requests on the wire, round 19 (s19-client): requests built and
checked as plain maps when queued (univrs/client/outbox.py) say and refuse what
``protocol.encode_requests`` does, and a request that is not plain data fails alone.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from univrs.client import outbox, protocol
from univrs.client.connection import Connection
from univrs.client.protocol import Request, ServerHello
from univrs.codec import DEFAULT_MAX_DEPTH
from univrs.errors import InvalidArgument

# ---------------------------------------------------------------- requests

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 65), 1 << 65),  # out of the CBOR range on both sides too
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
)
_ODD = st.one_of(
    st.sets(st.integers(0, 3), max_size=2),
    st.frozensets(st.integers(0, 3), max_size=2),
    st.just(object()),
    st.tuples(st.integers(0, 3), st.text(max_size=2)),
)
_VALUES = st.recursive(
    st.one_of(_SCALARS, _ODD),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
_ARGS = st.one_of(
    st.dictionaries(st.text(max_size=4), _VALUES, max_size=4),
    st.dictionaries(st.one_of(st.integers(-3, 3), st.booleans()), _SCALARS, max_size=2),
    _VALUES,
)
_KEYS = st.one_of(
    st.none(),
    st.tuples(st.text(max_size=4), st.integers(-(1 << 65), 1 << 65)),
    st.tuples(st.text(max_size=4), _VALUES),
    st.lists(_SCALARS, max_size=3),
)
_STRISH = st.one_of(st.none(), st.text(max_size=4), _VALUES)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@settings(max_examples=600, deadline=None)
@given(
    rid=st.one_of(st.integers(0, 1 << 64), st.integers(-5, -1), st.just(1 << 64)),
    op=st.one_of(st.text(max_size=8), _VALUES),
    args=_ARGS,
    key=_KEYS,
    consistency=_STRISH,
    timeout_ms=st.one_of(st.none(), st.integers(-(1 << 65), 1 << 65), _VALUES),
    hops=st.one_of(st.integers(0, 3), st.integers(1 << 64, 1 << 65)),
    token=_STRISH,
    client=_STRISH,
    answer=_STRISH,
)
def test_a_queued_request_is_encode_requests_own_and_refused_as_it_would_be(
    rid: int,
    op: Any,
    args: Any,
    key: Any,
    consistency: Any,
    timeout_ms: Any,
    hops: int,
    token: Any,
    client: Any,
    answer: Any,
) -> None:
    """The request's bytes are ``encode_requests``'s, and ``plain_request`` refuses exactly
    what ``encode_requests`` refuses (fails with a field left unchecked, or checked at another
    depth)."""
    fields = (rid, op, args, key, consistency, timeout_ms, hops, token, client, answer)
    request = Request(
        id=rid,
        op=op,
        args=args,
        key=key,
        consistency=consistency,
        timeout_ms=timeout_ms,
        hops=hops,
        token=token,
        client=client,
        answer=answer,
    )
    try:
        general: bytes | None = protocol.encode_requests([request])
    except TypeError:
        general = None
    try:
        mine: bytes | None = outbox.encode_plain_requests([outbox.plain_request(*fields)])
    except TypeError:
        mine = None
    assert mine == general


@pytest.mark.parametrize("depth", [DEFAULT_MAX_DEPTH - 3, DEFAULT_MAX_DEPTH - 2])
def test_the_args_depth_is_the_frames(depth: int) -> None:
    """Args nested to the depth the frame's check allows pass, one deeper fail, as before."""
    request = Request(id=1, op="x.y", args={"a": _nested(depth)})
    try:
        protocol.encode_requests([request])
        refused = False
    except TypeError:
        refused = True
    with pytest.raises(TypeError) if refused else _nothing():
        outbox.plain_request(1, "x.y", {"a": _nested(depth)})
    assert refused == (depth == DEFAULT_MAX_DEPTH - 2)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class Recorder:
    """Takes the request frames (a websocket's ``send_message``), answers none by itself."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send_message(self, data: bytes) -> None:
        self.frames.append(data)


async def test_a_request_that_is_not_plain_fails_alone(nursery: trio.Nursery) -> None:
    """Queued with another caller's good request: the bad one is ``InvalidArgument`` at once and
    never sent; the good one goes out and gets its answer (before round 19 the writer's encoding
    failed the whole batch: both got ``InvalidArgument``)."""
    ws = Recorder()
    conn = Connection(address="rec:1", hello=ServerHello(node="n1", leader="n1", members={}))
    nursery.start_soon(conn._writer, ws)  # type: ignore[arg-type]
    outcomes: dict[str, Any] = {}

    async def call(name: str, args: dict[str, Any]) -> None:
        try:
            outcomes[name] = await conn.request("workload.create", args)
        except InvalidArgument as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as calls:
        calls.start_soon(call, "good", {"spec": {"name": "w"}})
        calls.start_soon(call, "bad", {"spec": {"labels": {1, 2}}})
        await trio.testing.wait_all_tasks_blocked()
        sent = [r for frame in ws.frames for r in cbor2.loads(frame)]
        assert [r["args"] for r in sent] == [{"spec": {"name": "w"}}]
        conn._take(protocol.encode_responses("n1", [{"id": sent[0]["id"], "ok": {"id": "w"}}]))
    assert outcomes["good"] == ({"id": "w"}, None)
    bad = outcomes["bad"]
    assert isinstance(bad, InvalidArgument) and "cannot be encoded" in bad.message
    assert conn.in_flight == 0

    # ``queue`` (a forwarding node's): the waiter fails, nothing is queued.
    rid, waiter = conn.queue("workload.create", {"spec": {1, 2}})
    assert waiter.done and rid not in conn._pending
    with pytest.raises(InvalidArgument, match="cannot be encoded"):
        waiter.result()


async def test_args_changed_after_queueing_fail_their_requests_not_the_connection(
    nursery: trio.Nursery,
) -> None:
    """The check runs when a request is queued; a caller that then puts something that cannot
    be encoded into its ``args`` (before the writer sends them) gets ``InvalidArgument``, and
    the connection's writer carries on for the next requests (without the guard the writer's
    encoding error ends the connection)."""
    ws = Recorder()
    conn = Connection(address="rec:1", hello=ServerHello(node="n1", leader="n1", members={}))
    nursery.start_soon(conn._writer, ws)  # type: ignore[arg-type]
    args: dict[str, Any] = {"spec": {"name": "w"}}
    _, waiter = conn.queue("workload.create", args)
    args["spec"]["later"] = object()
    await trio.testing.wait_all_tasks_blocked()
    assert waiter.done and not ws.frames
    with pytest.raises(InvalidArgument, match="cannot be encoded"):
        waiter.result()
    rid2, waiter2 = conn.queue("workload.create", {"spec": {"name": "v"}})
    await trio.testing.wait_all_tasks_blocked()
    assert [r["id"] for frame in ws.frames for r in cbor2.loads(frame)] == [rid2]
    conn._take(protocol.encode_responses("n1", [{"id": rid2, "ok": {"id": "v"}}]))
    assert waiter2.done and waiter2.result()["ok"] == {"id": "v"}


async def test_args_changed_after_queueing_fail_only_their_request(
    nursery: trio.Nursery,
) -> None:
    """A caller that breaks its ``args`` after queueing them fails alone: another caller's good
    request queued in the same batch still goes out (s20-review: the writer's encoding error
    failed every request of the batch with ``InvalidArgument``)."""
    ws = Recorder()
    conn = Connection(address="rec:1", hello=ServerHello(node="n1", leader="n1", members={}))
    args: dict[str, Any] = {"spec": {"name": "w"}}
    _, bad = conn.queue("workload.create", args)
    rid2, good = conn.queue("workload.create", {"spec": {"name": "v"}})
    args["spec"]["later"] = object()  # before the writer runs: both are in one batch
    nursery.start_soon(conn._writer, ws)  # type: ignore[arg-type]
    await trio.testing.wait_all_tasks_blocked()
    assert bad.done
    with pytest.raises(InvalidArgument, match="cannot be encoded"):
        bad.result()
    assert not good.done
    assert [r["id"] for frame in ws.frames for r in cbor2.loads(frame)] == [rid2]
    conn._take(protocol.encode_responses("n1", [{"id": rid2, "ok": {"id": "v"}}]))
    assert good.done and good.result()["ok"] == {"id": "v"}
