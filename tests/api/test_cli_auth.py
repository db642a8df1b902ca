"""The CLI against a node with auth on: `univrs token ...` and every command with UNIVRS_TOKEN."""

from __future__ import annotations

import json
import pathlib

from click.testing import CliRunner, Result

from tests.api.helpers import BackgroundCluster
from univrs.cli import main


def run(api: str, token: str | None, *args: str) -> Result:
    env = {"UNIVRS_API": api, "UNIVRS_TOKEN": token or ""}
    return CliRunner().invoke(main, list(args), env=env)


def ok(api: str, token: str | None, *args: str) -> object:
    result = run(api, token, *args, "--json")
    assert result.exit_code == 0, (args, result.output)
    return json.loads(result.output)


def test_cli_with_univrs_token(tmp_path: pathlib.Path) -> None:
    with BackgroundCluster(tmp_path, size=1, auth_enabled=True) as bg:
        api = bg.apis[0]
        denied = run(api, None, "workload", "list")
        assert denied.exit_code != 0 and "unauthenticated" in denied.output
        assert run(api, None, "cluster", "members").exit_code != 0

        boot = ok(api, None, "token", "bootstrap")
        assert isinstance(boot, dict)
        admin = boot["secret"]
        again = run(api, None, "token", "bootstrap")
        assert again.exit_code != 0 and "already-exists" in again.output

        human = run(api, admin, "token", "create", "--role", "read", "reader")
        assert human.exit_code == 0 and "shown only now" in human.output, human.output
        reader = next(
            line.split()[1] for line in human.output.splitlines() if line.startswith("secret:")
        )
        writer = ok(api, admin, "token", "create", "--role", "write", "writer")
        assert isinstance(writer, dict) and writer["roles"] == ["write"]
        listed = run(api, admin, "token", "list")
        assert listed.exit_code == 0 and "reader" in listed.output and "writer" in listed.output
        assert reader not in listed.output

        # Every kind of command with the admin token.
        ok(api, admin, "workload", "create", "--name", "web", "--image", "nginx", "--id", "w1")
        ok(api, admin, "credits", "mint", "alice", "5", "--reason", "test")
        ok(api, admin, "credits", "balance", "alice")
        ok(api, admin, "cluster", "members")
        ok(api, admin, "cluster", "status")
        assert run(api, admin, "cluster", "snapshot").exit_code == 0
        backup = tmp_path / "backup.univrs"
        saved = run(api, admin, "snapshot", "save", str(backup))
        assert saved.exit_code == 0 and backup.stat().st_size > 0, saved.output
        assert run(api, None, "snapshot", "save", str(tmp_path / "no.univrs")).exit_code != 0

        # read can read, not write; write cannot mint.
        ok(api, reader, "workload", "get", "w1")
        refused = run(api, reader, "workload", "scale", "w1", "3")
        assert refused.exit_code == 1 and "permission-denied" in refused.output
        ok(api, writer["secret"], "workload", "scale", "w1", "3")
        mint = run(api, writer["secret"], "credits", "mint", "bob", "1", "--reason", "x")
        assert mint.exit_code == 1 and "permission-denied" in mint.output

        revoked = run(api, admin, "token", "revoke", writer["id"])
        assert revoked.exit_code == 0 and "revoked token" in revoked.output
        gone = run(api, writer["secret"], "workload", "list")
        assert gone.exit_code != 0 and "unauthenticated" in gone.output
