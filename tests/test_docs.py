"""The shell examples of README.md and docs/*.md work as written (issue 13: `Idempotency-Key:
c7:1`, `instance create --node m1` before `nodeinfo register m1`, an `n3.toml` that does not
exist).

Every ``univrs ...`` line of every ```sh block must parse (commands, options, choices,
endpoints) and name files that exist; blocks marked ``<!-- doc-test: rest -->`` and
``<!-- doc-test: cli -->`` are run against a real cluster."""

from __future__ import annotations

import itertools
import json
import pathlib
import re
import shlex
import shutil
import subprocess
import time

import click
import pytest
from click.testing import CliRunner

from tests.api.helpers import BackgroundCluster
from univrs.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# <id>, [PEER], [--flag value] (optional parts), ...: the line is a pattern, not a command.
PLACEHOLDER = re.compile(r"<[^>]+>|^\[[A-Za-z-]|[A-Za-z0-9_-]\]$|\.\.\.")
FILE_OPTIONS = ("--config", "--file", "-f")
SHELL_OPERATORS = {">", ">>", "<", "|", "||", "&&", ";", "&"}


def shell_blocks(path: pathlib.Path) -> list[tuple[str | None, str]]:
    """(doc-test marker or None, text) of every ```sh block."""
    blocks = []
    marker = None
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        found = re.match(r"<!-- doc-test: (\w+)", line)
        if found:
            marker = found.group(1)
        elif line.strip() == "```sh":  # also indented, inside a list
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            blocks.append((marker, "\n".join(x.strip() for x in lines[i + 1 : end])))
            marker, i = None, end
        elif line.strip():
            marker = None
        i += 1
    return blocks


def commands(block: str) -> list[list[str]]:
    """The block's commands as argument lists (continuations joined, comments dropped)."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word in SHELL_OPERATORS:  # the command ends at a redirection, pipe or list
                words = words[:i]
                break
        if words:
            out.append(words)
    return out


def univrs_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCS:
        for _marker, block in shell_blocks(path):
            for words in commands(block):
                if words[0] in ("univrs", ".venv/bin/univrs"):
                    found.append((f"{path.name}: {shlex.join(words)}", words[1:]))
    return found


def parse(args: list[str]) -> None:
    """Parse ``univrs ARGS`` down to the command, without running it (raises on bad usage)."""
    command: click.Command = main
    ctx = main.make_context("univrs", list(args), resilient_parsing=False)
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None, name
        ctx = sub.make_context(name or "", rest, parent=ctx)
        command = sub


EXAMPLES = univrs_commands()


def test_examples_were_found() -> None:
    assert len(EXAMPLES) > 20


@pytest.mark.parametrize(("where", "args"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_every_example_parses_and_names_files_that_exist(where: str, args: list[str]) -> None:
    if any("$(" in a for a in args):
        return  # a command substitution: the shell's words, not shlex's
    if any(PLACEHOLDER.search(a) for a in args):
        args = [a for a in args if not PLACEHOLDER.search(a)]
        if not args:
            return
    else:
        parse(args)
    # The README runs on a fresh clone: its files must be there. The runbooks of docs/ may
    # name the operator's own config (n3.toml), but a path into the repository must exist.
    for option, value in itertools.pairwise(args):
        named = option in FILE_OPTIONS and value != "-" and not value.startswith("/")
        if named and (where.startswith("README.md") or "/" in value):
            assert (ROOT / value).exists(), f"{where}: {value} does not exist"


def _block(marker: str) -> str:
    for path in DOCS:
        for found, block in shell_blocks(path):
            if found == marker:
                return block
    raise AssertionError(f"no block marked doc-test: {marker}")


@pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("jq") is None, reason="needs curl and jq"
)
def test_the_rest_example_runs(tmp_path: pathlib.Path) -> None:
    block = _block("rest")
    with BackgroundCluster(tmp_path, size=3) as bg:
        for i, api in enumerate(bg.apis):
            block = block.replace(f"localhost:800{i}", api)
        result = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    documents, text, at = [], result.stdout, 0
    decoder = json.JSONDecoder()
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        doc, at = decoder.raw_decode(text, at)
        documents.append(doc)
    assert len(documents) == 2, text  # the local read, then the scale
    scaled = documents[-1]
    assert scaled.get("spec", {}).get("replicas") == 5, scaled


def test_the_cli_example_runs(tmp_path: pathlib.Path) -> None:
    with BackgroundCluster(tmp_path, size=1) as bg:
        env = {"UNIVRS_API": f"http://{bg.apis[0]}"}

        def cli(*args: str) -> str:
            result = CliRunner().invoke(main, list(args), env=env)
            assert result.exit_code == 0, f"univrs {shlex.join(args)}: {result.output}"
            return result.output

        for words in commands(_block("cli")):
            if words[0] == "export":
                assert words[1].startswith("UNIVRS_API=")
                continue
            assert words[0] == "univrs", words
            line = shlex.join(words)
            if "<workload-id>" in line:
                web = json.loads(cli("workload", "get", "--name", "web", "--json"))
                words = [w.replace("<workload-id>", web["id"]) for w in words]
            if "<instance-id>" in line:  # one the reconciler placed (it is on by default)
                deadline = time.monotonic() + 30
                while not (items := json.loads(cli("instance", "list", "--json"))["items"]):
                    assert time.monotonic() < deadline, "the reconciler placed nothing"
                    time.sleep(0.1)  # polls a condition, with the deadline above
                words = [w.replace("<instance-id>", items[0]["id"]) for w in words]
            cli(*words[1:])
