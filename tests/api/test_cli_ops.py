"""The operator's CLI (issue 13): endpoints as URLs and comma lists, the exit-code table of
docs/cli.md, `cluster status` as a health check."""

from __future__ import annotations

import json
import pathlib
import time
import urllib.request

import pytest
from click.testing import CliRunner, Result

from tests.api.helpers import BackgroundCluster
from univrs.cli import main
from univrs.cli.common import parse_endpoint, parse_endpoints
from univrs.tools.ports import free_ports


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env or {})


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:8000", "127.0.0.1:8000"),
        ("http://127.0.0.1:8000", "127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "127.0.0.1:8000"),
        ("HTTP://node1.example:8000", "node1.example:8000"),
        ("http://node1", "node1:80"),
        ("[::1]:8000", "[::1]:8000"),
        ("http://[::1]:8000", "[::1]:8000"),
        (" localhost:8001 ", "localhost:8001"),
        ("https://node1:8443/", "https://node1:8443"),
        ("https://node1", "https://node1:443"),
    ],
)
def test_endpoint_forms(text: str, want: str) -> None:
    assert parse_endpoint(text) == want


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("::1:8000", "brackets"),
        ("127.0.0.1", "no port"),
        ("ftp://h:1", "only http"),
        ("http://h:1/v1", "nothing more"),
        ("http://h:99999", "99999"),
    ],
)
def test_bad_endpoints_say_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_endpoint(text)


def test_comma_lists() -> None:
    assert parse_endpoints("http://a:1, b:2,,a:1") == ["a:1", "b:2"]
    bad = run("cluster", "status", "--api", "a:1,::1:2")
    assert bad.exit_code == 2 and "brackets" in bad.output
    # Commands that act on one particular node refuse a list: another node would act instead.
    for args in (["cluster", "leave"], ["cluster", "snapshot"], ["cluster", "join", "x:1"]):
        one = run(*args, "--api", "a:1,b:2")
        assert one.exit_code == 2 and "acts on one node" in one.output, one.output


def test_exit_codes_with_nobody_listening() -> None:
    """Every command says 3 (unavailable) when no node answers (cluster commands said 1)."""
    (port,) = free_ports(1)
    api = f"http://127.0.0.1:{port}"
    for args in (
        ["cluster", "status"],
        ["cluster", "members"],
        ["cluster", "snapshot"],
        ["workload", "list", "--timeout", "2"],
    ):
        result = run(*args, "--api", api)
        assert result.exit_code == 3, (args, result.output)
        assert result.output.startswith("error:"), result.output
    env = run("cluster", "status", env={"UNIVRS_API": api})
    assert env.exit_code == 3


def test_cluster_status_is_a_health_check(tmp_path: pathlib.Path) -> None:
    """0 with a leader and every member answering, 1 with a member down, on any endpoint form
    and with the first endpoint of a list down."""
    (dead,) = free_ports(1)
    with BackgroundCluster(tmp_path, size=3) as bg:
        apis = bg.apis
        healthy = run("cluster", "status", "--api", f"127.0.0.1:{dead},http://{apis[0]}/")
        assert healthy.exit_code == 0, healthy.output
        assert "leader: n" in healthy.output
        listed = run("workload", "list", "--api", ",".join(f"http://{a}" for a in apis))
        assert listed.exit_code == 0, listed.output
        cluster = bg.cluster
        assert cluster is not None
        victim = cluster.followers()[0]
        survivor = next(n for n in cluster.running() if n is not victim)
        bg.run(cluster.kill, victim.node_id)
        degraded = run("cluster", "status", "--api", cluster.api(survivor))
        assert degraded.exit_code == 1, degraded.output
        assert f"unreachable: {victim.node_id}" in degraded.output

        # No quorum: a write and a read fail as fast as REST does (the node waits one election
        # time for a leader), with "unavailable", not an 11 s "timeout: session.open".
        other = next(n for n in cluster.running() if n is not survivor)
        bg.run(cluster.kill, other.node_id)
        deadline = time.monotonic() + 30
        while survivor.status().leader is not None:  # CheckQuorum steps a lone leader down
            assert time.monotonic() < deadline, "the survivor kept its leader"
            time.sleep(0.05)
        for args in (["workload", "create", "--name", "w", "--image", "i"], ["workload", "list"]):
            started = time.monotonic()
            result = run(*args, "--api", cluster.api(survivor))
            elapsed = time.monotonic() - started
            assert result.exit_code == 3, result.output
            assert result.output.startswith("error: unavailable: no leader"), result.output
            assert elapsed < 8.0, elapsed  # LEADER_WAIT is 3 s; the full --timeout is 10 s
        leaderless = run("cluster", "status", "--api", cluster.api(survivor))
        assert leaderless.exit_code == 3 and "no leader" in leaderless.output


def test_workloads_by_id_prefix_and_name(tmp_path: pathlib.Path) -> None:
    """Only the full id worked; now a unique prefix or a unique --name, and ambiguity says
    what matches (exit 2). The fixed ids start with letters that are not hex digits, so the
    generated id (hex) can never share their prefix."""
    with BackgroundCluster(tmp_path, size=1) as bg:
        env = {"UNIVRS_API": bg.apis[0]}

        def cli(*args: str) -> Result:
            return run(*args, env=env)

        for wid, name in (("pqc1", "web"), ("pqd2", "web"), ("xyz9", "db")):
            made = cli("workload", "create", "--id", wid, "--name", name, "--image", "i")
            assert made.exit_code == 0, made.output
        auto = cli("workload", "create", "--name", "solo", "--image", "i", "--json")
        assert auto.exit_code == 0, auto.output
        auto_id = json.loads(auto.output)["id"]

        assert "pqc1" in cli("workload", "get", "pqc").output
        assert auto_id in cli("workload", "get", auto_id[:8]).output
        ambiguous = cli("workload", "get", "pq")
        assert ambiguous.exit_code == 2, ambiguous.output
        assert "matches 2 workloads: pqc1 (web), pqd2 (web)" in ambiguous.output
        by_name = cli("workload", "get", "--name", "db", "--json")
        assert by_name.exit_code == 0 and json.loads(by_name.output)["id"] == "xyz9"
        two = cli("workload", "get", "--name", "web")
        assert two.exit_code == 2 and "pqc1 (web), pqd2 (web)" in two.output
        assert cli("workload", "get", "--name", "nope").exit_code == 1
        assert cli("workload", "get", "zzz").exit_code == 1
        assert cli("workload", "get").exit_code == 2
        assert cli("workload", "get", "pqc1", "--name", "web").exit_code == 2
        scaled = cli("workload", "scale", "xy", "3", "--json")
        assert scaled.exit_code == 0 and json.loads(scaled.output)["spec"]["replicas"] == 3
        assert cli("workload", "delete", "--name", "db").exit_code == 0
        assert cli("workload", "get", "xyz9").exit_code == 1


def test_local_reads_answer_from_the_api_node(tmp_path: pathlib.Path) -> None:
    """`--local --api <follower>` was answered by the leader (the client moved there)."""
    with BackgroundCluster(tmp_path, size=3) as bg:
        cluster = bg.cluster
        assert cluster is not None
        leader = cluster.leader()
        assert leader is not None
        follower = cluster.followers()[0]
        made = run("workload", "create", "--id", "w1", "--name", "web", "--image", "i",
                   "--api", cluster.api(leader))  # fmt: skip
        assert made.exit_code == 0, made.output

        def gets(node: object) -> float:
            url = f"http://{cluster.api(node)}/metrics"  # type: ignore[arg-type]
            with urllib.request.urlopen(url, timeout=10) as resp:
                text = resp.read().decode()
            return sum(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith('univrs_api_requests_total{op="workload.get"')
            )

        before = gets(follower), gets(leader)
        local = run("workload", "get", "w1", "--local", "--api", cluster.api(follower))
        assert local.exit_code == 0 and "web" in local.output, local.output
        assert (gets(follower), gets(leader)) == (before[0] + 1, before[1])


def test_cli_writes_reuse_one_cached_session(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each CLI write cost three log entries (session.open, the write, session.close); with
    the cached session the first costs two and the next ones one each."""
    import fcntl
    import os
    import stat

    sessions = tmp_path / "sessions"
    monkeypatch.setenv("UNIVRS_SESSION_DIR", str(sessions))
    with BackgroundCluster(tmp_path / "c", size=1) as bg:
        cluster = bg.cluster
        assert cluster is not None
        (node,) = cluster.running()
        env = {"UNIVRS_API": bg.apis[0]}
        deadline = time.monotonic() + 30
        while node.status().membership.incarnation_of(node.node_id) is None:
            # The leader records its incarnation in one entry of its own: let it land first.
            assert time.monotonic() < deadline, "the incarnation was never recorded"
            time.sleep(0.05)

        def write(n: int) -> int:
            before = node.status().last_index
            result = run("credits", "mint", "alice", str(n), "--reason", "t", env=env)
            assert result.exit_code == 0, result.output
            return node.status().last_index - before

        assert write(1) == 2  # opens the session, writes
        assert [write(2), write(3)] == [1, 1]
        (cached,) = sessions.glob("session-*.json")
        assert stat.S_IMODE(sessions.stat().st_mode) == 0o700
        assert stat.S_IMODE(cached.stat().st_mode) == 0o600
        doc = json.loads(cached.read_text())
        assert doc["client_id"].startswith("c") and doc["next_seq"] == 4

        # Another command holds the session: this one uses its own (open, write, close).
        lock = next(sessions.glob("session-*.lock"))
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            assert write(4) == 3
        finally:
            os.close(fd)
        assert json.loads(cached.read_text()) == doc  # untouched

        # A session the server no longer knows (another cluster's, or expired) is replaced.
        cached.write_text(json.dumps({"client_id": "c999999", "next_seq": 5}))
        assert write(5) == 3  # refused as session-expired, a new session, the write
        assert json.loads(cached.read_text())["client_id"] != "c999999"
        balance = run("credits", "balance", "alice", "--json", env=env)
        assert json.loads(balance.output)["balance"] == 15  # every write applied once
