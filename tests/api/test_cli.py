"""The state CLI (`univrs workload|instance|nodeinfo|credits`) against a running node."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from tests.api.helpers import BY_HAND, BackgroundCluster
from univrs.cli import main
from univrs.tools.ports import free_ports


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with BackgroundCluster(tmp_path_factory.mktemp("cli"), size=1, **BY_HAND) as bg:
        yield bg.apis[0]


def run(api: str, *args: str, input: str | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(main, list(args), env={"UNIVRS_API": api}, input=input)


def ok_json(api: str, *args: str) -> object:
    result = run(api, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_workload_lifecycle(api: str) -> None:
    created = ok_json(
        api,
        "workload",
        "create",
        "--name",
        "web",
        "--image",
        "nginx:1.27",
        "--replicas",
        "2",
        "--label",
        "tier=front",
        "--env",
        "MODE=prod",
        "--port",
        "8080/tcp:http",
        "--id",
        "web",
    )
    assert isinstance(created, dict)
    assert created["spec"]["ports"] == [{"container_port": 8080, "protocol": "tcp", "name": "http"}]
    version = created["version"]
    human = run(api, "workload", "get", "web")
    assert human.exit_code == 0
    assert "nginx:1.27" in human.output and "tier=front" in human.output
    table = run(api, "workload", "list", "--label", "tier=front")
    assert table.exit_code == 0
    assert table.output.splitlines()[0].split()[:3] == ["ID", "NAME", "IMAGE"]
    assert "web" in table.output.splitlines()[1]
    scaled = ok_json(api, "workload", "scale", "web", "5", "--expected-version", str(version))
    assert isinstance(scaled, dict) and scaled["spec"]["replicas"] == 5
    stale = run(api, "workload", "scale", "web", "6", "--expected-version", str(version))
    assert stale.exit_code == 1
    assert stale.output.strip().startswith("error: version-conflict:")
    assert len(stale.output.strip().splitlines()) == 1
    spec = json.dumps({"name": "web", "image": "nginx:1.28"})
    updated = run(api, "workload", "update", "web", "--file", "-", "--json", input=spec)
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.output)["spec"] == {
        **json.loads(spec),
        "replicas": 1,
        "args": [],
        "env": {},
        "labels": {},
        "resources": {"cpu_millis": 0, "memory_bytes": 0},
        "ports": [],
    }
    local = run(api, "workload", "get", "web", "--local")
    assert local.exit_code == 0 and "nginx:1.28" in local.output
    deleted = run(api, "workload", "delete", "web")
    assert deleted.exit_code == 0 and "deleted workload web" in deleted.output
    missing = run(api, "workload", "get", "web")
    assert missing.exit_code == 1 and "not-found" in missing.output


def test_instances_and_nodes(api: str) -> None:
    ok_json(api, "workload", "create", "--name", "db", "--image", "postgres", "--id", "db")
    node = ok_json(
        api,
        "nodeinfo",
        "register",
        "m1",
        "--address",
        "10.0.0.1",
        "--cpu-millis",
        "4000",
        "--label",
        "zone=a",
    )
    assert isinstance(node, dict) and node["capacity"]["cpu_millis"] == 4000
    inst = ok_json(api, "instance", "create", "db", "--node", "m1", "--id", "db-0")
    assert isinstance(inst, dict) and inst["status"] == "pending"
    running = ok_json(api, "instance", "status", "db-0", "running", "--message", "started")
    assert isinstance(running, dict) and running["status"] == "running"
    listed = run(api, "instance", "list", "--node", "m1")
    assert listed.exit_code == 0 and "db-0" in listed.output and "running" in listed.output
    nodes = run(api, "nodeinfo", "list", "--label", "zone=a")
    assert nodes.exit_code == 0 and "m1" in nodes.output
    down = ok_json(api, "nodeinfo", "status", "m1", "down")
    assert isinstance(down, dict) and down["status"] == "down"
    unknown = ok_json(api, "instance", "get", "db-0")
    assert isinstance(unknown, dict) and unknown["status"] == "unknown"
    gone = run(api, "nodeinfo", "deregister", "m1")
    assert gone.exit_code == 0
    assert run(api, "instance", "get", "db-0").exit_code == 1


def test_credits(api: str) -> None:
    minted = run(api, "credits", "mint", "alice", "10", "--reason", "welcome")
    assert minted.exit_code == 0 and "balance 10" in minted.output
    moved = run(api, "credits", "transfer", "alice", "bob", "4")
    assert moved.exit_code == 0 and "alice (now 6)" in moved.output
    assert run(api, "credits", "balance", "bob").output.strip() == "bob: 4"
    table = run(api, "credits", "balance")
    assert "alice" in table.output and "total: 10" in table.output
    broke = run(api, "credits", "transfer", "bob", "alice", "100")
    assert broke.exit_code == 1 and "insufficient-credits" in broke.output


def test_bad_usage_and_unreachable(api: str, tmp_path: pathlib.Path) -> None:
    bad = run(api, "workload", "create", "--name", "x")
    assert bad.exit_code == 2 and "--image" in bad.output
    invalid = run(api, "workload", "create", "--name", "Bad Name", "--image", "i")
    assert invalid.exit_code == 2
    assert "invalid-argument" in invalid.output and "spec.name" in invalid.output
    (port,) = free_ports(1)
    down = run(f"127.0.0.1:{port}", "workload", "list")
    assert down.exit_code == 3
    assert down.output.startswith("error:") and "is a node running there?" in down.output


def test_list_then_watch_and_heartbeat(api: str) -> None:
    listed = ok_json(api, "workload", "list")
    assert isinstance(listed, dict)
    start = listed["revision"] + 1
    ok_json(api, "workload", "create", "--name", "seen", "--image", "nginx:1.27", "--id", "seen")
    ok_json(api, "nodeinfo", "register", "hb1")
    beat = ok_json(api, "nodeinfo", "heartbeat", "hb1")
    assert isinstance(beat, dict) and beat["status"] == "ready" and beat["ttl_ms"] > 0
    human = run(api, "nodeinfo", "heartbeat", "hb1")
    assert human.exit_code == 0 and "hb1 is ready" in human.output
    lines = run(api, "watch", "workloads", "--from", str(start), "--count", "1", "--json")
    assert lines.exit_code == 0, lines.output
    [event] = [json.loads(line) for line in lines.output.splitlines()]
    assert (event["type"], event["kind"], event["id"]) == ("put", "workload", "seen")
    table = run(api, "watch", "--from", str(start), "--count", "2")
    assert table.exit_code == 0, table.output
    assert "workload  seen" in table.output and "node      hb1" in table.output
    bad = run(api, "watch", "pods", "--count", "1")
    assert bad.exit_code == 2 and "unknown kind" in bad.output
