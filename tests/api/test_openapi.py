"""The OpenAPI document against the server: every operation's answer on a fixed path (and a
write whose object its own batch deleted) validates against its documented schema, and a
bounded schemathesis run finds no 500s, no undocumented status codes and no response that
breaks its documented schema."""

from __future__ import annotations

import json
import pathlib
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
import trio
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance
from trio_websocket import open_websocket_url

from tests.api.helpers import BackgroundCluster, open_cluster
from univrs.api.openapi import openapi_document
from univrs.api.rest import ENDPOINTS
from univrs.client import protocol
from univrs.service.operations import OPERATIONS


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: pathlib.Path = tmp_path_factory.mktemp("openapi")
    with BackgroundCluster(folder, size=1) as bg:
        yield bg.apis[0]


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """One HTTP session for every case. Without it schemathesis opens a connection per case and
    leaves it to the cyclic GC to close; in a process whose heap is large (the full suite) that
    runs rarely, and the node refuses the 257th open connection from one address
    (``limits.max_connections_per_address``): the cases then fail with connection resets."""
    with requests.Session() as shared:
        yield shared


# The document the server serves (the first test checks that it is this one). The coverage
# phase is off: in schemathesis 4.32 it sends "0" as a *valid* value of a header whose schema
# has a pattern (Idempotency-Key), which the server rightly refuses; the examples and fuzzing
# phases (positive and negative data) run.
schema = schemathesis.openapi.from_dict(
    openapi_document(),
    config=SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}}),
)


def test_document_is_served_and_lists_every_endpoint(api: str) -> None:
    with urllib.request.urlopen(f"http://{api}/openapi.json", timeout=10) as resp:
        served = json.load(resp)
    assert served == json.loads(json.dumps(openapi_document()))
    routed = {(ep.method.lower(), ep.path) for ep in ENDPOINTS}
    documented = {(m, p) for p, ops in served["paths"].items() for m in ops}
    assert routed == documented


DOCUMENT = openapi_document()


def conforms(op_name: str, status: int, answer: object) -> list[str]:
    """What is wrong with ``answer`` as operation ``op_name``'s ``status`` answer, by the
    document's own schema (nothing: it conforms)."""
    op = OPERATIONS[op_name]
    documented = DOCUMENT["paths"][op.http.path][op.http.method.lower()]["responses"]
    assert str(status) in documented, (op_name, status)
    schema = documented[str(status)]["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": DOCUMENT["components"]})
    return [f"{op_name} {status}: {e.message}" for e in validator.iter_errors(answer)]


def test_a_wrong_answer_breaks_its_schema() -> None:
    """The check below can fail: a workload without its spec, a version as text."""
    assert conforms("workload.get", 200, {"id": "w", "version": 3}) != []
    assert conforms("credits.mint", 200, {"peer": "a", "balance": 1, "version": "3"}) != []
    # A write's answer after its batch deleted the object: documented (it was not, before).
    assert conforms("workload.update", 200, {"id": "w", "version": 3, "deleted": True}) == []
    assert conforms("workload.get", 200, {"id": "w", "version": 3, "deleted": True}) != []
    # A minimal answer (Prefer: return=minimal, s18-answers): documented for object writes.
    assert conforms("workload.scale", 200, {"id": "w", "version": 3}) == []
    assert conforms("instance.create", 201, {"id": "i", "version": 3}) == []
    assert conforms("workload.scale", 200, {"id": "w", "version": "3"}) != []
    assert conforms("workload.scale", 200, {"id": "w", "version": 3, "more": 1}) != []
    assert conforms("workload.get", 200, {"id": "w", "version": 3}) != []


SPEC = {"name": "web", "image": "nginx:1", "replicas": 1}


@pytest.fixture(scope="module")
def quiet_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A node without the reconciler (``reconcile_resync_ms = 0``), which would otherwise
    replace or delete the instance made by hand below between two of the calls."""
    folder: pathlib.Path = tmp_path_factory.mktemp("openapi-quiet")
    with BackgroundCluster(folder, size=1, reconcile_resync_ms=0) as bg:
        yield bg.apis[0]


def test_every_operation_answers_as_documented(quiet_api: str, session: requests.Session) -> None:
    """Each operation once, with valid arguments, through REST: the answer's status is the
    documented success and its body conforms to the documented schema."""
    api = quiet_api
    seen: dict[str, Any] = {}
    problems: list[str] = []

    def call(name: str, body: Any = None, query: str = "", **path: str) -> Any:
        op = OPERATIONS[name]
        url = f"http://{api}{op.http.path.format(**path)}{query}"
        resp = session.request(op.http.method, url, json=body, timeout=30)
        answer = resp.json()
        problems.extend(conforms(name, resp.status_code, answer))
        assert resp.status_code == (201 if op.http.creates else 200), (name, answer)
        seen[name] = answer
        return answer

    call("workload.create", {"id": "oa-w", "spec": SPEC})
    call("workload.get", id="oa-w")
    call("workload.list")
    call("workload.update", {"spec": {**SPEC, "replicas": 2}}, id="oa-w")
    call("workload.scale", {"replicas": 3}, id="oa-w")
    call("node.register", {"id": "oa-n", "addresses": ["10.0.0.1"]})
    call("node.get", id="oa-n")
    call("node.list")
    call("node.update_status", {"status": "ready"}, id="oa-n")
    call("node.heartbeat", id="oa-n")
    inst = call("instance.create", {"workload_id": "oa-w", "node_id": "oa-n"})
    call("instance.get", id=inst["id"])
    call("instance.list")
    call("instance.update_status", {"status": "running"}, id=inst["id"])
    call("events.poll", query="?wait_ms=0")
    call("reconcile.status")
    call("credits.mint", {"to_peer": "oa-a", "amount": 10, "reason": "test"})
    call("credits.transfer", {"from_peer": "oa-a", "to_peer": "oa-b", "amount": 4})
    call("credits.balance", peer="oa-a")
    call("credits.list")
    opened = call("session.open", {})
    call("session.close", client_id=opened["client_id"])
    call("token.bootstrap", {"name": "oa-admin"})
    created = call("token.create", {"name": "oa-t", "roles": ["read"]})
    call("token.list")
    call("token.revoke", id=created["id"])
    call("instance.delete", id=inst["id"])
    call("node.deregister", id="oa-n")
    call("workload.delete", id="oa-w")
    assert problems == []
    assert set(seen) == set(OPERATIONS)


async def test_a_write_whose_object_its_batch_deleted_answers_as_documented(
    tmp_path: pathlib.Path,
) -> None:
    """One frame [write, delete] of the fast protocol (which answers as REST does) is one
    batch: the write is answered ``{"id", "version", "deleted": true}`` (session 11), for
    every kind of write that renders its object. Before: no schema of the document allowed
    that answer."""
    async with open_cluster(tmp_path, size=1, reconcile_resync_ms=0) as cluster:
        (node,) = cluster.running()
        port = node.raft_port
        assert port is not None
        url = f"ws://127.0.0.1:{port}{protocol.PATH}"
        async with open_websocket_url(url) as ws:
            await ws.send_message(protocol.encode_client_hello())
            await ws.get_message()
            rid = 0

            async def frame(*requests: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
                nonlocal rid
                first = rid + 1
                batch = []
                for op, args in requests:
                    rid += 1
                    batch.append(protocol.Request(id=rid, op=op, args=args))
                await ws.send_message(protocol.encode_requests(batch))
                answers: dict[int, dict[str, Any]] = {}
                with trio.fail_after(20):
                    while len(answers) < len(batch):
                        _, responses = protocol.decode_responses(await ws.get_message())
                        answers.update({r["id"]: r for r in responses})
                return [answers[i] for i in range(first, rid + 1)]

            def ok(answer: dict[str, Any]) -> Any:
                assert "error" not in answer, answer
                return answer["ok"]

            problems: list[str] = []
            pairs: list[tuple[str, dict[str, Any], str]] = [
                ("workload.update", {"id": "w1", "spec": SPEC}, "workload.delete"),
                ("workload.scale", {"id": "w2", "replicas": 2}, "workload.delete"),
                ("node.update_status", {"id": "n1", "status": "draining"}, "node.deregister"),
                ("node.heartbeat", {"id": "n2"}, "node.deregister"),
                ("instance.update_status", {"status": "running"}, "instance.delete"),
            ]
            for wid in ("w1", "w2", "w3"):
                ok((await frame(("workload.create", {"id": wid, "spec": SPEC})))[0])
            for nid in ("n1", "n2", "n3"):
                ok((await frame(("node.register", {"id": nid})))[0])
            # A heartbeat of a node that is up is answered by the leader without a proposal;
            # one of a node marked down is written (it marks the node ready).
            ok((await frame(("node.update_status", {"id": "n2", "status": "down"})))[0])
            inst = ok((await frame(("instance.create", {"workload_id": "w3", "node_id": "n3"})))[0])
            for write, args, delete in pairs:
                if write == "instance.update_status":
                    args = {**args, "id": inst["id"]}
                written, deleted = await frame((write, args), (delete, {"id": args["id"]}))
                answer = ok(written)
                assert answer.get("deleted") is True and answer["id"] == args["id"], (write, answer)
                ok(deleted)
                status = 201 if OPERATIONS[write].http.creates else 200
                problems.extend(conforms(write, status, answer))
            assert problems == []


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_document(
    case: schemathesis.Case[Any], api: str, session: requests.Session
) -> None:
    wait_ms = (case.query or {}).get("wait_ms")
    if case.path == "/v1/events" and type(wait_ms) is int and wait_ms > 50:
        case.query["wait_ms"] = 50  # a valid long poll waits: keep the run short
    response = case.call(base_url=f"http://{api}", session=session, timeout=30)
    excluded: list[schemathesis.CheckFunction] = []
    if response.status_code == 422 and _cross_field_rule(response.json()):
        excluded.append(positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)


# Rules JSON Schema cannot state (relations between fields, or with the stored state): the
# server answers 422 for data the document calls valid, and says which rule.
CROSS_FIELD_RULES = (
    "cannot transfer credits to the same peer",
    "appears twice",  # duplicate port number/protocol or port name
    "accepts no instances",  # the node is draining or down
    "cannot be running",  # an instance that is on no node
    "cannot be succeeded",
    "a terminal status",
    "instances do not move",
    "overflow",  # minting beyond the total supply
    "is off on this cluster",  # ?consistency=lease where [raft] read_lease is off
)


def _cross_field_rule(body: object) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    return any(rule in message for rule in CROSS_FIELD_RULES)
