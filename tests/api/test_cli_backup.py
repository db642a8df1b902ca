"""`univrs snapshot save|status|restore` and `univrs recover` from the command line: a save from
a running node, then status and restore offline, and what bad input and failures answer (exit
codes: 0 done, 1 refused or corrupt, 2 bad usage, 3 nobody reachable or no quorum)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from tests.api.helpers import BackgroundCluster
from univrs.cli import main
from univrs.storage import LogStore
from univrs.tools.ports import free_ports


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with BackgroundCluster(tmp_path_factory.mktemp("cli"), size=1) as bg:
        yield bg.apis[0]


def run(*args: str, api: str = "127.0.0.1:1") -> Result:
    return CliRunner().invoke(main, list(args), env={"UNIVRS_API": api})


def test_save_status_restore(api: str, tmp_path: pathlib.Path) -> None:
    assert run("workload", "create", "--name", "web", "--image", "i", api=api).exit_code == 0
    file = tmp_path / "b.snap"
    saved = run("snapshot", "save", str(file), api=f"http://{api}")
    assert saved.exit_code == 0, saved.output
    assert "saved snapshot of cluster" in saved.output and file.exists()
    status = run("snapshot", "status", str(file), "--json")
    assert status.exit_code == 0, status.output
    doc = json.loads(status.output)
    assert doc["checksum"] == "ok" and doc["objects"]["workloads"] == 1
    human = run("snapshot", "status", str(file))
    assert human.exit_code == 0 and "sha256:" in human.output and "1 workloads" in human.output
    restored = run(
        "snapshot", "restore", str(file), "--data-dir", str(tmp_path / "r1"),
        "--node-id", "r1", "--initial-cluster", "r1=127.0.0.1:7001,r2=127.0.0.1:7002",
        "--cluster-id", "restored",
    )  # fmt: skip
    assert restored.exit_code == 0, restored.output
    assert "cluster restored" in restored.output
    with LogStore.open(tmp_path / "r1", node_id="r1", create=False) as store:
        assert store.cluster_id == "restored"
    again = run(
        "snapshot", "restore", str(file), "--data-dir", str(tmp_path / "r1"),
        "--node-id", "r1", "--initial-cluster", "r1=127.0.0.1:7001",
    )  # fmt: skip
    assert again.exit_code == 1 and "not empty" in again.output


def test_failures_and_bad_usage(tmp_path: pathlib.Path) -> None:
    (port,) = free_ports(1)
    file = tmp_path / "b.snap"
    down = run("snapshot", "save", str(file), api=f"127.0.0.1:{port}")
    assert down.exit_code == 3 and "cannot reach" in down.output
    assert not file.exists() and not (tmp_path / "b.snap.tmp").exists()
    file.write_bytes(b"not a snapshot")
    corrupt = run("snapshot", "status", str(file))
    assert corrupt.exit_code == 1 and "corrupt snapshot file" in corrupt.output
    for bad in (
        "r1",
        "r1=nohost",
        "r1=127.0.0.1:1,r1=127.0.0.1:2",
        "bad id=127.0.0.1:1",
        "r1=127.0.0.1:1,r2=127.0.0.1:1",
    ):
        usage = run(
            "snapshot", "restore", str(file), "--data-dir", str(tmp_path / "d"),
            "--node-id", "r1", "--initial-cluster", bad,
        )  # fmt: skip
        assert usage.exit_code == 2, (bad, usage.output)
    absent = run(
        "snapshot", "restore", str(file), "--data-dir", str(tmp_path / "d"),
        "--node-id", "r9", "--initial-cluster", "r1=127.0.0.1:1",
    )  # fmt: skip
    assert absent.exit_code == 2 and "not in --initial-cluster" in absent.output
    missing = run("recover", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1 and "does not exist" in missing.output
    bad_id = run("recover", "--data-dir", str(tmp_path), "--cluster-id", "no good")
    assert bad_id.exit_code == 2
