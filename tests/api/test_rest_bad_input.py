"""Bad input for every REST endpoint: the right 4xx, a JSON error naming the field, never 500.

One 3-node cluster serves the whole table, every request sent to a follower. Requests refused
for their syntax (400 and most 422) must not reach the Raft log: checked by comparing the
leader's last log index before and after each of them.
"""

from __future__ import annotations

import pathlib
from typing import Any

import attrs

from tests.api.helpers import BY_HAND, WORKLOAD, open_cluster, wait_until

SPEC = {"name": "web", "image": "nginx"}


def spec(**changes: Any) -> dict[str, Any]:
    return {"spec": {**SPEC, **changes}}


@attrs.frozen
class Case:
    method: str
    path: str
    body: Any = None
    status: int = 422
    code: str | None = None
    field: str | None = None
    raw: bytes | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    logged: bool = False  # the state machine decides (the command goes through the log)


BAD = [
    # ------------------------------------------------------------------ workloads
    Case("POST", "/v1/workloads", raw=b"{", status=400, code="malformed-request"),
    Case("POST", "/v1/workloads", raw=b"\xff\xfe", status=400, code="malformed-request"),
    Case("POST", "/v1/workloads", raw=b"[" * 100_000, status=400, code="malformed-request"),
    Case("POST", "/v1/workloads", [], code="invalid-argument"),
    Case("POST", "/v1/sessions", raw=b"null", code="invalid-argument"),
    Case("POST", "/v1/workloads", {}, field="spec"),
    Case("POST", "/v1/workloads", {"spec": {"name": "web"}}, field="spec.image"),
    Case("POST", "/v1/workloads", {"spec": "web"}, field="spec"),
    Case("POST", "/v1/workloads", spec(replicas=-1), field="spec.replicas"),
    Case("POST", "/v1/workloads", spec(replicas=100_001), field="spec.replicas"),
    Case("POST", "/v1/workloads", spec(replicas="3"), field="spec.replicas"),
    Case("POST", "/v1/workloads", spec(replicas=2.5), field="spec.replicas"),
    Case("POST", "/v1/workloads", spec(replicas=float("nan")), field="spec.replicas"),
    Case("POST", "/v1/workloads", spec(replicas=True), field="spec.replicas"),
    Case("POST", "/v1/workloads", spec(replicas=2**70), field="spec.replicas"),
    Case("POST", "/v1/workloads", spec(bogus=1), field="spec.bogus"),
    Case("POST", "/v1/workloads", {**spec(), "extra": 1}, field="extra"),
    Case("POST", "/v1/workloads", spec(name="Web!"), field="spec.name"),
    Case("POST", "/v1/workloads", spec(name=""), field="spec.name"),
    Case("POST", "/v1/workloads", spec(image="a b"), field="spec.image"),
    Case("POST", "/v1/workloads", spec(image="\ud800"), field="spec.image"),
    Case("POST", "/v1/workloads", spec(labels={"a": 1}), field="spec.labels.a"),
    Case("POST", "/v1/workloads", spec(labels=["a"]), field="spec.labels"),
    Case("POST", "/v1/workloads", spec(labels={"-bad": "x"}), field="spec.labels"),
    Case("POST", "/v1/workloads", spec(env={"1BAD": "x"}), field="spec.env"),
    Case("POST", "/v1/workloads", spec(args=["ok", 1]), field="spec.args[1]"),
    Case("POST", "/v1/workloads", spec(args=["nul\x00"]), field="spec.args"),
    Case(
        "POST",
        "/v1/workloads",
        spec(resources={"cpu_millis": -5}),
        field="spec.resources.cpu_millis",
    ),
    Case(
        "POST",
        "/v1/workloads",
        spec(ports=[{"container_port": 70000}]),
        field="spec.ports[0].container_port",
    ),
    Case(
        "POST",
        "/v1/workloads",
        spec(ports=[{"container_port": 80, "protocol": "icmp"}]),
        field="spec.ports[0].protocol",
    ),
    Case(
        "POST",
        "/v1/workloads",
        spec(ports=[{"container_port": 80}, {"container_port": 80}]),
        field="spec.ports",
    ),
    Case("POST", "/v1/workloads", {"id": "bad id", **spec()}, field="id"),
    Case("POST", "/v1/workloads", {"id": None, **spec()}, field="id"),
    Case("POST", "/v1/workloads", spec(replicas=None), field="spec.replicas"),
    Case("POST", "/v1/instances", {"workload_id": "w1", "node_id": None}, field="node_id"),
    Case(
        "POST",
        "/v1/workloads/w1/scale",
        {"replicas": 1, "expected_version": None},
        field="expected_version",
    ),
    Case(
        "POST",
        "/v1/workloads",
        {"id": "w1", **spec()},
        status=409,
        code="already-exists",
        logged=True,
    ),
    Case(
        "POST",
        "/v1/workloads",
        spec(),
        status=400,
        field="Idempotency-Key",
        headers={"Idempotency-Key": "just-a-key"},
    ),
    Case(
        "POST",
        "/v1/workloads",
        spec(),
        status=400,
        field="Idempotency-Key",
        headers={"Idempotency-Key": "c1:0"},
    ),
    Case(
        "POST",
        "/v1/workloads",
        spec(),
        status=409,
        code="session-expired",
        headers={"Idempotency-Key": "c999999:1"},
        logged=True,
    ),
    Case("GET", "/v1/workloads?limit=0", field="limit"),
    Case("GET", "/v1/workloads?limit=abc", field="limit"),
    Case("GET", "/v1/workloads?limit=1&limit=2", field="limit"),
    Case("GET", "/v1/workloads?bogus=1", field="bogus"),
    Case("GET", "/v1/workloads?consistency=eventual", field="consistency"),
    Case("GET", "/v1/workloads?label=novalue", field="label"),
    Case("GET", "/v1/workloads/nope", status=404, code="not-found"),
    Case("GET", "/v1/workloads/nope?extra=1", field="extra"),
    Case("PUT", "/v1/workloads/nope", spec(), status=404, logged=True),
    Case("PUT", "/v1/workloads/bad%20id", spec(), status=404),
    Case("PUT", "/v1/workloads/w1", {}, field="spec"),
    Case("PUT", "/v1/workloads/w1", {**spec(), "id": "x"}, field="id"),
    Case(
        "PUT", "/v1/workloads/w1", spec(), status=400, field="If-Match", headers={"If-Match": "abc"}
    ),
    Case(
        "PUT",
        "/v1/workloads/w1",
        {**spec(), "expected_version": 1},
        field="expected_version",
        status=409,
        code="version-conflict",
        headers={"If-Match": '"2"'},
    ),
    Case("POST", "/v1/workloads/w1/scale", {"replicas": -1}, field="replicas"),
    Case("POST", "/v1/workloads/w1/scale", {"replicas": 100_001}, field="replicas"),
    Case("POST", "/v1/workloads/w1/scale", {}, field="replicas"),
    Case(
        "POST",
        "/v1/workloads/w1/scale",
        {"replicas": 1, "expected_version": -1},
        field="expected_version",
    ),
    Case(
        "POST",
        "/v1/workloads/w1/scale",
        {"replicas": 1, "expected_version": "3"},
        field="expected_version",
    ),
    Case("POST", "/v1/workloads/nope/scale", {"replicas": 1}, status=404, logged=True),
    Case("DELETE", "/v1/workloads/nope", status=404, logged=True),
    Case("DELETE", "/v1/workloads/w1?expected_version=abc", field="expected_version"),
    Case("DELETE", "/v1/workloads/w1?expected_version=-3", field="expected_version"),
    Case("PATCH", "/v1/workloads/w1", status=405, code="method-not-allowed"),
    # ------------------------------------------------------------------ instances
    Case("POST", "/v1/instances", {}, field="workload_id"),
    Case("POST", "/v1/instances", {"workload_id": 5}, field="workload_id"),
    Case("POST", "/v1/instances", {"workload_id": "nope"}, status=404, logged=True),
    Case(
        "POST", "/v1/instances", {"workload_id": "w1", "node_id": "nope"}, status=404, logged=True
    ),
    Case("POST", "/v1/instances", {"workload_id": "w1", "id": "i1"}, status=409, logged=True),
    Case("GET", "/v1/instances?status=bogus", field="status"),
    Case("GET", "/v1/instances/nope", status=404),
    Case("PUT", "/v1/instances/i1/status", {"status": "exploded"}, field="status"),
    Case("PUT", "/v1/instances/i1/status", {}, field="status"),
    Case("PUT", "/v1/instances/i1/status", {"status": "failed", "message": 3}, field="message"),
    Case("PUT", "/v1/instances/nope/status", {"status": "running"}, status=404, logged=True),
    Case(
        "PUT",
        "/v1/instances/i1/status",
        {"status": "running"},
        code="invalid-argument",
        logged=True,
    ),  # not on a node: the state machine refuses it
    Case("DELETE", "/v1/instances/nope", status=404, logged=True),
    # ------------------------------------------------------------------ nodes
    Case("POST", "/v1/nodes", {}, field="id"),
    Case("POST", "/v1/nodes", {"id": "node-a"}, status=409, code="already-exists", logged=True),
    Case("POST", "/v1/nodes", {"id": "node-b", "status": "sleepy"}, field="status"),
    Case(
        "POST",
        "/v1/nodes",
        {"id": "node-b", "capacity": {"cpu_millis": "x"}},
        field="capacity.cpu_millis",
    ),
    Case("POST", "/v1/nodes", {"id": "node-b", "addresses": ["a b"]}, field="addresses[0]"),
    Case("POST", "/v1/nodes", {"id": "node-b", "labels": {"k": None}}, field="labels.k"),
    Case("GET", "/v1/nodes/nope", status=404),
    Case("GET", "/v1/nodes?status=gone", field="status"),
    Case("PUT", "/v1/nodes/node-a/status", {"status": "x"}, field="status"),
    Case("PUT", "/v1/nodes/nope/status", {"status": "ready"}, status=404, logged=True),
    Case("DELETE", "/v1/nodes/nope", status=404, logged=True),
    # ------------------------------------------------------------------ credits, sessions
    Case("POST", "/v1/credits/mint", {"to_peer": "a", "amount": 0, "reason": "r"}, field="amount"),
    Case("POST", "/v1/credits/mint", {"to_peer": "a", "amount": -5, "reason": "r"}, field="amount"),
    Case("POST", "/v1/credits/mint", {"to_peer": "a", "amount": 5, "reason": "  "}, field="reason"),
    Case("POST", "/v1/credits/mint", {"to_peer": "a", "amount": 5}, field="reason"),
    Case(
        "POST", "/v1/credits/mint", {"to_peer": "a b", "amount": 5, "reason": "r"}, field="to_peer"
    ),
    Case(
        "POST",
        "/v1/credits/transfer",
        {"from_peer": "a", "to_peer": "b", "amount": 10**6},
        status=409,
        code="insufficient-credits",
        logged=True,
    ),
    Case(
        "POST",
        "/v1/credits/transfer",
        {"from_peer": "a", "to_peer": "a", "amount": 1},
        field="to_peer",
    ),
    Case("GET", "/v1/credits/balances?limit=5000", field="limit"),
    Case("POST", "/v1/sessions", {"x": 1}, field="x"),
    Case("DELETE", "/v1/sessions/bad%20id", status=404),
    Case(
        "POST",
        "/v1/sessions",
        {},
        status=400,
        field="Idempotency-Key",
        headers={"Idempotency-Key": "c1:1"},
    ),
    Case("POST", "/v1/nodes", {"id": "node-b", "addresses": ["é:80"]}, field="addresses[0]"),
    Case("GET", "/v1/nothing", status=404, code="not-found"),
]


async def test_bad_input_table(tmp_path: pathlib.Path) -> None:
    # No liveness: node-a never heartbeats, and on a slow machine the cases outlast its TTL;
    # the leader's entry marking it down would count as a refused request reaching the log.
    async with open_cluster(tmp_path, node_ttl_ms=0, **BY_HAND) as cluster:
        leader = await cluster.wait_leader()
        # Every case goes through a follower, so the state-dependent ones are forwarded.
        node = cluster.followers()[0]
        setup = [
            ("POST", "/v1/workloads", {"id": "w1", "spec": WORKLOAD}),
            ("POST", "/v1/nodes", {"id": "node-a"}),
            ("POST", "/v1/instances", {"id": "i1", "workload_id": "w1"}),
            ("POST", "/v1/credits/mint", {"to_peer": "a", "amount": 5, "reason": "seed"}),
        ]
        for method, path, body in setup:
            r = await cluster.http(node, method, path, body)
            assert r.status == 201 or r.status == 200, r.body

        # The leader binds every member's incarnation with one configuration entry of its
        # own: wait for it, so only the cases below could append to the log.
        def bound() -> bool:
            m = leader.status().membership
            return {n for n, _ in m.incarnations} == set(m.members) and (
                leader.status().commit == leader.status().last_index
            )

        await wait_until(bound, "every member's incarnation bound and committed")
        created = await cluster.http(node, "GET", "/v1/workloads/w1")
        version_after_setup = created.body["version"]  # its last change's log index
        problems = []
        for case in BAD:
            before = leader.status().last_index
            r = await cluster.http(
                node, case.method, case.path, case.body, raw_body=case.raw, headers=case.headers
            )
            after = leader.status().last_index
            error = (r.body or {}).get("error") if isinstance(r.body, dict) else None
            where = f"{case.method} {case.path} {case.body!r:.60}"
            if r.status != case.status:
                problems.append(f"{where}: status {r.status} != {case.status}: {r.body}")
            elif not isinstance(error, dict) or not error.get("message"):
                problems.append(f"{where}: no JSON error body: {r.body}")
            elif case.code is not None and error.get("code") != case.code:
                problems.append(f"{where}: code {error.get('code')} != {case.code}")
            elif case.field is not None and error.get("field") != case.field:
                problems.append(f"{where}: field {error.get('field')!r} != {case.field!r}")
            elif not case.logged and after != before:
                problems.append(f"{where}: a refused request reached the log")
        assert not problems, "\n".join(problems)
        # The state is as the setup left it: nothing above changed anything.
        listed = await cluster.http(node, "GET", "/v1/workloads")
        assert [w["id"] for w in listed.body["items"]] == ["w1"]
        assert listed.body["items"][0]["version"] == version_after_setup


async def test_good_input_round_trips(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1, **BY_HAND) as cluster:
        (node,) = cluster.running()
        full = {
            "name": "api.v2",
            "image": "registry.local/api@sha256:abc",
            "replicas": 0,
            "args": ["--port", "8080"],
            "env": {"MODE": "prod", "EMPTY": ""},
            "labels": {"app": "api", "example.com/tier": "backend"},
            "resources": {"cpu_millis": 250, "memory_bytes": 64 * 2**20},
            "ports": [{"container_port": 8080, "protocol": "tcp", "name": "http"}],
        }
        created = await cluster.http(node, "POST", "/v1/workloads", {"id": "api", "spec": full})
        assert created.status == 201, created.body
        assert created.body["spec"] == full
        r = await cluster.http(node, "POST", "/v1/nodes", {"id": "m1", "labels": {"zone": "a"}})
        assert r.status == 201 and r.body["status"] == "ready"
        r = await cluster.http(
            node, "POST", "/v1/instances", {"workload_id": "api", "node_id": "m1"}
        )
        assert r.status == 201 and r.body["status"] == "pending", r.body
        iid = r.body["id"]
        r = await cluster.http(node, "PUT", f"/v1/instances/{iid}/status", {"status": "running"})
        assert r.status == 200 and r.body["status"] == "running"
        r = await cluster.http(node, "GET", "/v1/instances?workload_id=api&node_id=m1")
        assert [i["id"] for i in r.body["items"]] == [iid]
        r = await cluster.http(node, "GET", "/v1/workloads/api")
        assert r.body["status"]["running"] == 1
        r = await cluster.http(node, "PUT", "/v1/nodes/m1/status", {"status": "down"})
        assert r.status == 200 and r.body["status"] == "down"
        r = await cluster.http(node, "GET", f"/v1/instances/{iid}")
        assert r.body["status"] == "unknown"
        r = await cluster.http(node, "DELETE", "/v1/workloads/api")
        assert r.status == 200
        r = await cluster.http(node, "GET", f"/v1/instances/{iid}")
        assert r.status == 404  # cascaded
        r = await cluster.http(node, "DELETE", "/v1/nodes/m1")
        assert r.status == 200
        for i in range(5):
            r = await cluster.http(
                node, "POST", "/v1/credits/mint", {"to_peer": f"p{i}", "amount": 10, "reason": "x"}
            )
            assert r.status == 200 and r.body["balance"] == 10
        r = await cluster.http(
            node, "POST", "/v1/credits/transfer", {"from_peer": "p0", "to_peer": "p1", "amount": 4}
        )
        assert r.body["from"] == {"peer": "p0", "balance": 6}
        assert r.body["to"] == {"peer": "p1", "balance": 14}
        pages = []
        after = None
        for _ in range(10):
            q = "/v1/credits/balances?limit=2" + (f"&after={after}" if after else "")
            r = await cluster.http(node, "GET", q)
            pages.append([b["peer"] for b in r.body["items"]])
            after = r.body["next"]
            if after is None:
                break
        assert pages == [["p0", "p1"], ["p2", "p3"], ["p4"]]
        assert r.body["total_supply"] == 50
        r = await cluster.http(node, "GET", "/v1/credits/balances/nobody")
        assert r.body == {"peer": "nobody", "balance": 0}
        for name, labels in (("a", {"t": "x"}), ("b", {"t": "y"}), ("c", {"t": "x", "u": "1"})):
            await cluster.http(node, "POST", "/v1/workloads", {"id": name, **spec(labels=labels)})
        r = await cluster.http(node, "GET", "/v1/workloads?label=t=x")
        assert [w["id"] for w in r.body["items"]] == ["a", "c"]
        r = await cluster.http(node, "GET", "/v1/workloads?label=t=x&label=u=1")
        assert [w["id"] for w in r.body["items"]] == ["c"]
        r = await cluster.http(node, "HEAD", "/v1/workloads")
        assert r.status == 200


async def test_an_oversized_body_is_refused(tmp_path: pathlib.Path) -> None:
    # A small limit, so the whole body is sent before the answer (a body larger than the
    # socket buffers would race the server's early 413 and close).
    async with open_cluster(tmp_path, size=1, max_body_bytes=1000) as cluster:
        (node,) = cluster.running()
        body = {"spec": {**SPEC, "args": ["x" * 2000]}}
        r = await cluster.http(node, "POST", "/v1/workloads", body)
        assert r.status == 413 and r.body["error"]["code"] == "payload-too-large"
        assert "larger than 1000 bytes" in r.body["error"]["message"]
        ok = await cluster.http(node, "POST", "/v1/workloads", {"spec": SPEC})
        assert ok.status == 201
