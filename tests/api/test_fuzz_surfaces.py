"""A seeded fuzzer of every client surface of a node: the fast protocol (``/client``), the
REST API and the MCP endpoint (``/v1/mcp``), against a real in-process 3-node cluster.

What an outside checker's forged clients would send: every operation with arguments of every
wrong type (None, booleans, integers at the 64-bit edges, NaN and infinities, empty, huge and
control-character strings, bytes, nested and non-string-keyed maps, long lists), mixed with
valid arguments so that requests also reach the state machine; odd idempotency keys, timeouts,
hops, tokens and unknown fields; REST paths, query strings and headers (``If-Match``,
``Idempotency-Key``) of every shape; MCP tool calls with wrong arguments, unknown tools and
methods, batches and notifications. Requests go to the leader and to followers (which forward).

Every request must get an answer in time: an error of the protocol (never ``internal``, the
answer to a bug), an HTTP status below 500 (or 503/504/507, which are answers about the
cluster, not bugs); nothing may be logged at ERROR (an escaped exception), and every node must
still answer ``/v1/health`` and commit a write afterwards.

The default run keeps a short seeded slice (``ROUNDS`` rounds per surface, seed 1: every
surface and every kind of value, a few hundred requests); the soak tier
(``scripts/test --all``, tests/conftest.py) runs ``SOAK_ROUNDS`` rounds of each of
``SOAK_SEEDS``. ``UNIVRS_FUZZ_ROUNDS=N`` sets the default test's rounds per surface,
``UNIVRS_FUZZ_SEED`` its seed.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import random
from typing import Any

import cbor2
import httpx2
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.api.helpers import Cluster, open_cluster
from univrs.service.operations import OPERATIONS

ROUNDS = int(os.environ.get("UNIVRS_FUZZ_ROUNDS", "12"))
SEED = int(os.environ.get("UNIVRS_FUZZ_SEED", "1"))
SOAK_ROUNDS = 40
SOAK_SEEDS = (2, 3)
ANSWER_WITHIN = 40.0  # seconds: every request is answered (server deadlines are at most 60 s)
CLUSTER_ANSWERS = (503, 504, 507)  # unavailable, timeout, no-space: about the cluster
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
GOOD: dict[str, Any] = {
    "id": "w1",
    "spec": {"name": "web", "image": "nginx", "replicas": 1},
    "replicas": 2,
    "workload_id": "w1",
    "node_id": "m1",
    "to_peer": "p1",
    "from_peer": "p2",
    "amount": 5,
    "peer": "p1",
    "status": "running",
    "kinds": "workload",
    "from_revision": 1,
    "wait_ms": 10,
    "limit": 3,
    "name": "t",
    "roles": ["read"],
    "addresses": ["10.0.0.1:80"],
    "capacity": {"cpu_millis": 1000},
    "labels": {"a": "b"},
}


def hostile(rng: random.Random, depth: int = 0) -> Any:
    """A value of some shape that has broken parsers before."""
    c = rng.randrange(17)
    if c == 0:
        return None
    if c == 1:
        return rng.choice([True, False])
    if c == 2:
        return rng.choice([0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**64)])
    if c == 3:
        return rng.choice([0.5, -0.0, 1e308, float("nan"), float("inf"), -float("inf")])
    if c == 4:
        return "x" * rng.choice([0, 1, 63, 64, 65, 253, 254, 256, 10_000, 200_000])
    if c == 5:
        return rng.choice(["\x00", "a/b", "..", "é", "web", "w1", "m1", "*", "a b", "-a", "A"])
    if c == 6:
        return b"\xff\x00"
    if c == 7 and depth < 4:
        return [hostile(rng, depth + 1) for _ in range(rng.randrange(4))]
    if c == 8 and depth < 4:
        return {str(hostile(rng, depth + 1))[:20]: hostile(rng, depth + 1) for _ in range(3)}
    if c == 9:
        return {1: 2}
    if c == 10:
        return ["x"] * rng.choice([0, 1, 100, 5000])
    if c == 11:
        return {f"k{i}": "v" for i in range(rng.choice([0, 1, 65, 1000]))}
    if c == 12:
        field = rng.choice(["env", "args", "ports", "resources", "labels", "replicas", "image"])
        return {"name": "web", "image": "nginx", field: hostile(rng, depth + 1)}
    if c == 13:
        port = {"container_port": hostile(rng, depth + 1), "protocol": hostile(rng, depth + 1)}
        return {"name": "web", "image": "nginx", "ports": [port]}
    if c == 14:
        return rng.choice(["running", "pending", "down", "ready", "workload,instance", ""])
    if c == 15:
        return rng.choice(["read", "write", "admin", "credits", "bogus"])
    return rng.randrange(-5, 100)


def arguments(rng: random.Random, names: list[str]) -> dict[str, Any]:
    """Arguments for parameters ``names``: valid, hostile or missing, plus an unknown one."""
    args: dict[str, Any] = {}
    for name in names:
        if rng.random() < 0.8:
            good = name in GOOD and rng.random() < 0.6
            args[name] = GOOD[name] if good else hostile(rng)
    if rng.random() < 0.1:
        args[str(hostile(rng))[:10]] = hostile(rng)
    return args


def fast_request(rng: random.Random, rid: int) -> dict[str, Any]:
    op = rng.choice([*OPERATIONS, "nope", ""])
    known = OPERATIONS.get(op)
    req: dict[str, Any] = {
        "id": rid,
        "op": op,
        "args": arguments(rng, [p.name for p in known.params] if known else []),
    }
    if rng.random() < 0.2:
        req["key"] = [rng.choice(["c", "", "x" * 600]), rng.choice([0, 1, 5, 2**64 - 1])]
    if rng.random() < 0.2:
        req["consistency"] = rng.choice(["local", "linearizable"])
    if rng.random() < 0.3:
        req["timeout_ms"] = rng.choice([0, 1, 10, 500, 10**12, 2**64 - 1])
    if rng.random() < 0.2:
        req["hops"] = rng.choice([0, 1, 2, 2**64 - 1])
    if rng.random() < 0.1:
        req["client"] = rng.choice(["1.2.3.4", "", "x" * 256])
    if rng.random() < 0.1:
        req["token"] = rng.choice(["x", "univrs.abc", "a" * 512])
    if rng.random() < 0.05:
        req["extra"] = 1
    return req


def as_json(value: Any) -> Any:
    """``value`` with what JSON cannot carry (bytes, non-string keys) made JSON."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def rest_request(rng: random.Random) -> tuple[str, str, bytes | None, dict[str, str]]:
    ops = [o for o in OPERATIONS.values() if o.http is not None]
    op = rng.choice(ops)
    assert op.http is not None
    method = op.http.method if rng.random() < 0.9 else rng.choice(["PATCH", "DELETE", "PUT"])
    ident = rng.choice(["w1", "web", "x" * 300, "%00", "..", "a%2Fb", "%C3%A9"])
    path = op.http.path.replace("{id}", ident)
    if rng.random() < 0.3:
        path += "?" + rng.choice(
            [
                "consistency=local",
                "consistency=bogus",
                "limit=-1",
                "limit=99999999999999999999",
                "after=",
                "labels=a",
                "labels=%00=1",
                "wait_ms=999999999",
                "from_revision=-5",
                "x=1&x=2",
            ]
        )
    body = None
    if method in ("POST", "PUT") or rng.random() < 0.1:
        doc = arguments(rng, [p.name for p in op.params]) if rng.random() < 0.9 else hostile(rng)
        body = json.dumps(as_json(doc)).encode()
    headers: dict[str, str] = {}
    if rng.random() < 0.2:
        headers["If-Match"] = rng.choice(["1", '"1"', "-1", "abc", "9" * 30])
    if rng.random() < 0.2:
        headers["Idempotency-Key"] = rng.choice(["c:1", "x", "c:-1", ":", "c:" + "9" * 30])
    return method, path, body, headers


def mcp_request(rng: random.Random, tools: list[dict[str, Any]]) -> bytes:
    tool = rng.choice(tools)
    props = list((tool.get("inputSchema") or {}).get("properties") or {})
    args: Any = as_json(arguments(rng, props))
    if rng.random() < 0.05:
        args = as_json(hostile(rng))
    name = tool["name"] if rng.random() < 0.95 else "nope"
    method = rng.choice(
        ["tools/call"] * 8
        + ["tools/list", "initialize", "ping", "x", "prompts/get", "resources/read"]
    )
    msg: Any = {
        "jsonrpc": "2.0",
        "id": rng.choice([1, "x", 2**70, 1.5]),
        "method": method,
        "params": {"name": name, "arguments": args, "uri": name},
    }
    if rng.random() < 0.05:
        del msg["id"]  # a notification
    if rng.random() < 0.05:
        msg = [msg, msg]
    return json.dumps(msg).encode()


def bug_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("univrs", "mcp"))
    ]


async def fuzz_fast(cluster: Cluster, rng: random.Random, rounds: int) -> list[str]:
    problems: list[str] = []
    for round_ in range(rounds):
        node = rng.choice(cluster.running())
        reqs = [fast_request(rng, i) for i in range(rng.randrange(1, 30))]
        url = f"ws://127.0.0.1:{node.raft_port}/client"
        async with open_websocket_url(url, max_message_size=64 * 2**20) as ws:
            await ws.send_message(cbor2.dumps({"univrs": "client", "v": 1}))
            await ws.get_message()  # the server's hello
            await ws.send_message(cbor2.dumps(reqs))
            answered = 0
            with trio.move_on_after(ANSWER_WITHIN):
                while answered < len(reqs):
                    try:
                        data = await ws.get_message()
                    except ConnectionClosed as exc:
                        problems.append(f"round {round_}: connection closed: {exc}")
                        break
                    assert isinstance(data, bytes), data
                    frame = cbor2.loads(data)
                    for r in frame["r"]:
                        answered += 1
                        error = r.get("error") or {}
                        if error.get("code") == "internal":
                            problems.append(f"internal: {error} for {reqs[r['id']]!r:.300}")
            if answered < len(reqs):
                ops = [q["op"] for q in reqs]
                problems.append(f"round {round_}: {len(reqs) - answered} unanswered of {ops}")
    return problems


async def fuzz_http(cluster: Cluster, rng: random.Random, rounds: int) -> list[str]:
    problems: list[str] = []
    async with httpx2.AsyncClient(headers=MCP_HEADERS, timeout=ANSWER_WITHIN) as http:
        first = cluster.running()[0]
        listing = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}'
        answer = await http.post(f"http://{cluster.api(first)}/v1/mcp", content=listing)
        tools = answer.json()["result"]["tools"]
        for _ in range(2 * rounds):
            base = f"http://{cluster.api(rng.choice(cluster.running()))}"
            if rng.random() < 0.5:
                body = mcp_request(rng, tools)
                what = f"MCP {body[:300]!r}"
                send = http.post(base + "/v1/mcp", content=body)
            else:
                method, path, rest_body, headers = rest_request(rng)
                what = f"{method} {path[:100]} {headers} {(rest_body or b'')[:300]!r}"
                send = http.request(method, base + path, content=rest_body, headers=headers)
            try:
                with trio.fail_after(ANSWER_WITHIN):
                    answer = await send
            except (trio.TooSlowError, httpx2.HTTPError) as exc:
                problems.append(f"no answer ({exc!r}) to {what}")
                continue
            status = answer.status_code
            if status >= 500 and status not in CLUSTER_ANSWERS:
                problems.append(f"{status} {answer.text[:200]} to {what}")
            elif what.startswith("MCP") and status == 200 and '"InternalError' in answer.text:
                problems.append(f"internal error {answer.text[:200]} to {what}")
    return problems


async def fuzz(
    folder: pathlib.Path, caplog: pytest.LogCaptureFixture, seeds: tuple[int, ...], rounds: int
) -> None:
    """``rounds`` rounds per surface for each of ``seeds`` against one 3-node cluster; then
    no problem, nothing logged at ERROR, every node healthy and a write committed."""
    caplog.set_level(logging.ERROR)
    async with open_cluster(folder, size=3) as cluster:
        await cluster.wait_leader()
        problems: list[str] = []
        for seed in seeds:
            rng = random.Random(seed)
            problems += await fuzz_fast(cluster, rng, rounds)
            problems += await fuzz_http(cluster, rng, rounds)
        assert not problems, "\n".join(problems[:20])
        assert not bug_records(caplog), bug_records(caplog)[:10]
        for node in cluster.running():
            assert (await cluster.http(node, "GET", "/v1/health")).status == 200
        leader = await cluster.wait_leader()
        spec = {"spec": {"name": "after", "image": "nginx"}}
        created = await cluster.http(leader, "POST", "/v1/workloads", spec)
        assert created.status == 201, created


async def test_hostile_clients_get_answers_never_a_bug(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default run's seeded slice."""
    await fuzz(tmp_path, caplog, (SEED,), ROUNDS)


async def test_hostile_clients_at_length(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The soak tier's: more rounds, other seeds."""
    await fuzz(tmp_path, caplog, SOAK_SEEDS, SOAK_ROUNDS)
