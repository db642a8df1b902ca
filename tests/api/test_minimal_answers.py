"""Minimal write answers (s18-answers): ``"answer": "minimal"`` on the fast protocol,
``Prefer: return=minimal`` on REST, the client's ``answer``; full answers otherwise, and for
peers of older code (univrs/client/protocol.py, "Minimal answers")."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket

from tests.api.helpers import WORKLOAD, open_cluster
from tests.api.test_openapi import conforms
from univrs import codec
from univrs.client import protocol
from univrs.client.client import Client, open_client
from univrs.client.connection import Connection
from univrs.client.protocol import BadRequest, Request
from univrs.errors import InvalidArgument, MalformedRequest, VersionConflict
from univrs.net.http import request_json
from univrs.service.operations import OPERATIONS

# ---------------------------------------------------------------- the wire, no node


def test_object_writes_are_the_writes_that_answer_with_their_object() -> None:
    objects = {
        o.name
        for o in OPERATIONS.values()
        if o.is_write and o.result in ("Workload", "Instance", "Node")
    }
    assert objects == protocol.OBJECT_WRITES


def test_the_answer_field_is_decoded_and_bad_values_are_refused_per_request() -> None:
    good = [
        {"id": 1, "op": "workload.scale", "args": {}, "answer": "minimal"},
        {"id": 2, "op": "workload.scale", "args": {}, "answer": "full"},
        {"id": 3, "op": "workload.scale", "args": {}},
    ]
    decoded = protocol.decode_requests(codec.encode_plain(good))
    assert [r.answer for r in decoded if isinstance(r, Request)] == ["minimal", "full", None]
    for bad in ("MINIMAL", "", "min", 1, -1, True, 2.5, [], ["minimal"], {"a": 1}, b"minimal"):
        frame = codec.encode_plain([{"id": 7, "op": "workload.scale", "answer": bad}])
        (req,) = protocol.decode_requests(frame)
        assert isinstance(req, BadRequest), bad
        assert isinstance(req.error, MalformedRequest) and req.error.field == "answer"
        assert "'full' or 'minimal'" in req.error.message


def test_a_request_without_the_option_encodes_as_before() -> None:
    req = Request(id=1, op="workload.scale", args={"id": "w", "replicas": 2})
    assert "answer" not in req.to_plain()
    asked = Request(id=1, op="workload.scale", args={}, answer="minimal")
    assert asked.to_plain()["answer"] == "minimal"


def test_the_hello_says_whether_the_node_takes_the_option() -> None:
    new = protocol.decode_server_hello(protocol.encode_server_hello("n1", None, {}))
    assert isinstance(new, protocol.ServerHello) and new.minimal
    old = codec.encode_plain(
        {"univrs": "client", "v": 1, "node": "n1", "leader": None, "members": {}}
    )
    was = protocol.decode_server_hello(old)
    assert isinstance(was, protocol.ServerHello) and not was.minimal
    odd = codec.encode_plain(
        {"univrs": "client", "v": 1, "node": "n1", "leader": None, "members": {}, "answers": 3}
    )
    hello = protocol.decode_server_hello(odd)
    assert isinstance(hello, protocol.ServerHello) and not hello.minimal


def test_a_full_answer_reduces_to_the_minimal_one() -> None:
    doc = {"id": "w", "version": 9, "created_index": 3, "spec": {}, "status": {}}
    assert protocol.minimal_of("workload.scale", doc, {"index": 7}) == {"id": "w", "version": 7}
    assert protocol.minimal_of("workload.scale", {"id": "w", "version": 7}, {"index": 7}) == {
        "id": "w",
        "version": 7,
    }
    deleted = {"id": "w", "deleted": True, "version": 5}
    assert protocol.minimal_of("workload.delete", deleted, {"index": 5}) is deleted
    assert protocol.minimal_of("workload.scale", doc, None) is doc


# ---------------------------------------------------------------- against nodes


async def test_minimal_when_asked_full_otherwise_and_versions_committed(
    tmp_path: pathlib.Path,
) -> None:
    async with open_cluster(tmp_path, size=1) as cluster, trio.open_nursery() as nursery:
        (node,) = cluster.running()
        conn = await Connection.open(nursery, cluster.client_address(node))
        assert conn.hello.minimal
        created, meta = await conn.request("workload.create", {"spec": WORKLOAD}, answer="minimal")
        assert meta is not None and created == {"id": created["id"], "version": meta["index"]}
        wid = created["id"]
        # Without the option (an older client's request) and with "full": the document.
        full, meta = await conn.request("workload.scale", {"id": wid, "replicas": 2})
        assert full["spec"]["replicas"] == 2 and meta == {"index": full["version"]}
        asked_full, _ = await conn.request(
            "workload.scale", {"id": wid, "replicas": 3}, answer="full"
        )
        assert asked_full["spec"]["replicas"] == 3 and "status" in asked_full
        # Many scales of one workload in flight at once: each minimal answer carries the
        # version its own write committed (distinct, its meta.index), not the document's
        # version when the answer was made.
        answers: list[tuple[Any, Any]] = []

        async def scale(i: int) -> None:
            answers.append(
                await conn.request(
                    "workload.scale", {"id": wid, "replicas": i % 7}, answer="minimal"
                )
            )

        async with trio.open_nursery() as inner:
            for i in range(200):
                inner.start_soon(scale, i)
        versions = [result["version"] for result, _ in answers]
        assert all(result == {"id": wid, "version": m["index"]} for result, m in answers)
        assert len(set(versions)) == len(versions)
        latest, _ = await conn.request("workload.get", {"id": wid})
        assert latest["version"] == max(versions)
        # A compare-and-set chains on the minimal answer's version.
        cas, _ = await conn.request(
            "workload.scale",
            {"id": wid, "replicas": 1, "expected_version": max(versions)},
            answer="minimal",
        )
        assert cas["version"] > max(versions)
        # Errors are unchanged and complete.
        with pytest.raises(VersionConflict) as conflict:
            await conn.request(
                "workload.scale",
                {"id": wid, "replicas": 1, "expected_version": 1},
                answer="minimal",
            )
        assert conflict.value.current_version == cas["version"]
        with pytest.raises(InvalidArgument) as bad:
            await conn.request("workload.scale", {"id": wid, "replicas": -1}, answer="minimal")
        assert bad.value.field == "replicas"
        # Instances and nodes too; other writes answer as they always do.
        inst, meta = await conn.request("instance.create", {"workload_id": wid}, answer="minimal")
        assert meta is not None and inst == {"id": inst["id"], "version": meta["index"]}
        reg, meta = await conn.request(
            "node.register",
            {"id": "m1", "addresses": ["10.0.0.1"], "capacity": {"cpu_millis": 1000}},
            answer="minimal",
        )
        assert meta is not None and reg == {"id": "m1", "version": meta["index"]}
        gone, meta = await conn.request("workload.delete", {"id": wid}, answer="minimal")
        assert gone == {"id": wid, "deleted": True, "version": meta and meta["index"]}
        conn.close()


async def test_a_retried_keyed_write_answers_minimally_with_its_first_commit(
    tmp_path: pathlib.Path,
) -> None:
    """A keyed write sent again (a retry after an unknown outcome) is not applied twice: the
    session answers the stored response, and the minimal answer made from it carries the
    version the first attempt committed (the full form: the object now, with that version
    in its meta)."""
    async with open_cluster(tmp_path, size=1) as cluster, trio.open_nursery() as nursery:
        (node,) = cluster.running()
        conn = await Connection.open(nursery, cluster.client_address(node))
        session, _ = await conn.request("session.open", {})
        cid = session["client_id"]
        created, _ = await conn.request("workload.create", {"spec": WORKLOAD}, answer="minimal")
        wid = created["id"]
        first, meta = await conn.request(
            "workload.scale", {"id": wid, "replicas": 2}, key=(cid, 1), answer="minimal"
        )
        assert meta is not None and first == {"id": wid, "version": meta["index"]}
        # Later writes move the workload on; then the same key comes again, twice.
        later, _ = await conn.request(
            "workload.scale", {"id": wid, "replicas": 4}, key=(cid, 2), answer="minimal"
        )
        assert later["version"] > first["version"]
        again, _ = await conn.request(
            "workload.scale", {"id": wid, "replicas": 2}, key=(cid, 1), answer="minimal"
        )
        assert again == first
        full, full_meta = await conn.request(
            "workload.scale", {"id": wid, "replicas": 2}, key=(cid, 1), answer="full"
        )
        # The full form is the object as the leader has it now (the later write's document);
        # its meta names the version this write committed, as on the first attempt.
        assert full_meta == {"index": first["version"]}
        assert full["version"] == later["version"] and full["spec"]["replicas"] == 4
        # Nothing was applied again: the workload is still at the later write.
        now, _ = await conn.request("workload.get", {"id": wid})
        assert now["version"] == later["version"] and now["spec"]["replicas"] == 4
        conn.close()


async def test_bad_option_values_get_a_clear_error_and_the_node_carries_on(
    tmp_path: pathlib.Path,
) -> None:
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        port = node.raft_port
        assert port is not None
        async with open_websocket("127.0.0.1", port, protocol.PATH, use_ssl=False) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            frame = [
                {"id": 1, "op": "workload.create", "args": {"spec": WORKLOAD}, "answer": "tiny"},
                {"id": 2, "op": "workload.create", "args": {"spec": WORKLOAD}, "answer": 0},
                {"id": 3, "op": "workload.list", "args": {}, "answer": "minimal"},
                {"id": 4, "op": "events.poll", "args": {"timeout_ms": 1}, "answer": "minimal"},
                {"id": 5, "op": "workload.create", "args": {"spec": WORKLOAD}, "answer": "minimal"},
            ]
            await ws.send_message(codec.encode_plain(frame))
            got: dict[int, dict[str, Any]] = {}
            with trio.fail_after(20):
                while len(got) < len(frame):
                    _, responses = protocol.decode_responses(await ws.get_message())
                    got.update({r["id"]: r for r in responses})
        for rid, code in ((1, "malformed-request"), (2, "malformed-request")):
            error = got[rid]["error"]
            assert error["code"] == code and error["field"] == "answer", got[rid]
            assert "'full' or 'minimal'" in error["message"]
        for rid in (3, 4):
            error = got[rid]["error"]
            assert error["code"] == "invalid-argument" and error["field"] == "answer", got[rid]
        assert "writes only" in got[3]["error"]["message"]
        assert "writes only" in got[4]["error"]["message"]
        assert set(got[5]["ok"]) == {"id", "version"}
        assert len(list(node.runtime.sm.workload_ids())) == 1  # the refused applied nothing


async def test_a_node_of_older_code_gets_no_option_and_its_full_answer_is_reduced(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node of older code: its hello has no ``answers``, and it refuses the unknown field
    (``invalid-argument``). The client must not send it, and reduces the full answer."""

    def old_hello(node: str, leader: str | None, members: dict[str, Any]) -> bytes:
        doc = {"univrs": "client", "v": 1, "node": node, "leader": leader, "members": members}
        return codec.encode_plain(doc)

    monkeypatch.setattr(protocol, "encode_server_hello", old_hello)
    old_keys = protocol._REQUEST_KEYS - {"answer"}
    monkeypatch.setattr(protocol, "_REQUEST_KEYS", old_keys)
    async with open_cluster(tmp_path) as cluster, trio.open_nursery() as nursery:
        leader = await cluster.wait_leader()
        conn = await Connection.open(nursery, cluster.client_address(leader))
        assert not conn.hello.minimal
        with pytest.raises(MalformedRequest, match="unknown request field 'answer'"):
            await conn.request("workload.get", {"id": "x"}, answer="full")  # sent as is: refused
        created, meta = await conn.request("workload.create", {"spec": WORKLOAD}, answer="minimal")
        assert meta is not None and created == {"id": created["id"], "version": meta["index"]}
        full, _ = await conn.request("workload.scale", {"id": created["id"], "replicas": 5})
        assert full["spec"]["replicas"] == 5
        conn.close()


async def test_a_follower_reduces_the_full_answer_of_a_leader_of_older_code(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower of new code forwarding to a leader of older code (its hello has no
    ``answers``) sends no ``answer`` and reduces the leader's full answer itself."""
    old_node: list[str] = []
    new_hello = protocol.encode_server_hello

    def hello(node: str, leader: str | None, members: dict[str, Any]) -> bytes:
        if node not in old_node:
            return new_hello(node, leader, members)
        doc = {"univrs": "client", "v": 1, "node": node, "leader": leader, "members": members}
        return codec.encode_plain(doc)

    forwarded: list[str | None] = []
    decode = protocol._request

    def spy(rid: int, item: dict[Any, Any]) -> Request:
        if item.get("hops"):
            forwarded.append(item.get("answer"))
        return decode(rid, item)

    monkeypatch.setattr(protocol, "encode_server_hello", hello)
    monkeypatch.setattr(protocol, "_request", spy)
    async with open_cluster(tmp_path) as cluster, trio.open_nursery() as nursery:
        leader = await cluster.wait_leader()
        old_node.append(leader.node_id)
        follower = cluster.followers()[0]
        via = await Connection.open(nursery, cluster.client_address(follower))
        assert via.hello.minimal  # the follower is of new code
        created, meta = await via.request("workload.create", {"spec": WORKLOAD}, answer="minimal")
        assert meta is not None and created == {"id": created["id"], "version": meta["index"]}
        assert forwarded == [None]  # nothing the older leader would refuse
        via.close()


async def test_a_follower_forwards_the_option(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster, trio.open_nursery() as nursery:
        leader = await cluster.wait_leader()
        follower = cluster.followers()[0]
        conn = await Connection.open(nursery, cluster.client_address(follower))
        created, meta = await conn.request("workload.create", {"spec": WORKLOAD}, answer="minimal")
        assert meta is not None and created == {"id": created["id"], "version": meta["index"]}
        assert leader.runtime.sm.get_workload(created["id"]) is not None
        full, _ = await conn.request("workload.scale", {"id": created["id"], "replicas": 2})
        assert full["spec"]["replicas"] == 2
        conn.close()


async def test_the_client_default_and_per_call_option(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1) as cluster:
        addresses = cluster.client_addresses()
        async with open_client(addresses) as client:
            assert client.answer == "full"
            doc = await client.create_workload(WORKLOAD)
            assert "spec" in doc  # existing callers: unchanged
            small = await client.scale_workload(doc["id"], 2, answer="minimal")
            assert small == {"id": doc["id"], "version": small["version"]}
            chained = await client.scale_workload(
                doc["id"], 3, expected_version=small["version"], answer="minimal"
            )
            assert chained["version"] > small["version"]
            with pytest.raises(InvalidArgument) as bad:
                await client.scale_workload(doc["id"], 2, answer="smallest")
            assert bad.value.field == "answer"
            with pytest.raises(InvalidArgument, match="writes only"):
                await client.call("workload.get", {"id": doc["id"]}, answer="minimal")
        async with open_client(addresses, answer="minimal") as client:
            small = await client.scale_workload(doc["id"], 4)
            assert set(small) == {"id", "version"}
            assert "spec" in await client.scale_workload(doc["id"], 5, answer="full")
            session = await client.call("session.open", {})  # not an object write: as always
            assert "client_id" in session
            got = await client.get_workload(doc["id"])  # reads: the document
            assert got["spec"]["replicas"] == 5
        with pytest.raises(ValueError):
            Client(endpoints=addresses, nursery=None, answer="bogus")  # type: ignore[arg-type]


async def test_rest_prefer_return_minimal(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1) as cluster:
        (node,) = cluster.running()
        api = cluster.api(node)
        created = await request_json(
            api, "POST", "/v1/workloads", body={"spec": WORKLOAD}, timeout=20.0
        )
        wid = created.body["id"]
        small = await request_json(
            api,
            "POST",
            f"/v1/workloads/{wid}/scale",
            body={"replicas": 2},
            headers={"Prefer": "respond-async, return=minimal"},
            timeout=20.0,
        )
        assert small.status == 200
        index = int(small.headers["x-univrs-index"])
        assert small.body == {"id": wid, "version": index}
        assert conforms("workload.scale", 200, small.body) == []  # documented (openapi)
        assert small.headers["preference-applied"] == "return=minimal"
        assert small.headers["etag"] == f'"{index}"'
        for prefer in (None, "return=representation", "return=tiny", "garbage;;=,"):
            headers: dict[str, str] = {} if prefer is None else {"Prefer": prefer}
            full = await request_json(
                api,
                "POST",
                f"/v1/workloads/{wid}/scale",
                body={"replicas": 3},
                headers=headers,
                timeout=20.0,
            )
            assert full.status == 200 and full.body["spec"]["replicas"] == 3, prefer
            assert "preference-applied" not in full.headers
        read = await request_json(
            api, "GET", f"/v1/workloads/{wid}", headers={"Prefer": "return=minimal"}, timeout=20.0
        )
        assert read.status == 200 and "spec" in read.body  # reads ignore it (RFC 7240)
