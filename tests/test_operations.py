"""Operations are declared once (univrs/service/operations.py); every surface derives from it."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from univrs.api import openapi, rest, watch
from univrs.api.ops import HANDLERS, UNKEYED
from univrs.cli import main, state
from univrs.client import generate
from univrs.errors import InvalidArgument
from univrs.service.operations import (
    OPERATIONS,
    Arg,
    Command,
    Http,
    Kind,
    Operation,
    Opt,
    Param,
    Type,
    Where,
)
from univrs.service.schemas import SCHEMAS
from univrs.sm.state import ClusterStateMachine


def test_client_methods_are_generated_from_the_table() -> None:
    assert generate.TARGET.read_text() == generate.render(), (
        "univrs/client/methods.py is out of date: run python -m univrs.client.generate"
    )


def test_every_declared_operation_has_its_server_half() -> None:
    assert set(HANDLERS) == set(OPERATIONS)
    for name, h in HANDLERS.items():
        assert h.declaration is OPERATIONS[name]
        if h.is_write:
            assert h.build is not None and h.render is not None and h.read is None, name
        else:  # a read from the state machine, or a watch from the event history
            assert (h.read is not None) != h.watch and h.build is None, name
    assert {n for n, op in OPERATIONS.items() if op.kind is Kind.SESSION} == UNKEYED


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_routes_match_the_declared_arguments(name: str) -> None:
    op = OPERATIONS[name]
    segments = re.findall(r"\{([a-z_]+)\}", op.http.path)
    assert segments == [p.name for p in op.located(Where.PATH)], name
    assert not (op.http.creates and op.http.method != "POST"), name
    assert op.result in SCHEMAS, name
    for p in op.params:
        assert p.required or p.where is not Where.PATH, name
        if p.type in (Type.STR_MAP, Type.STR_LIST, Type.RESOURCES, Type.WORKLOAD_SPEC):
            assert not isinstance(p.cli, Arg), f"{name}.{p.name}: a positional takes one value"
    routes = [(ep.method, ep.path) for ep in rest.ENDPOINTS]
    assert len(routes) == len(set(routes))


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_the_server_accepts_exactly_the_declared_arguments(name: str) -> None:
    h = HANDLERS[name]

    def run(args: dict[str, object]) -> object:
        if h.read is not None:
            return h.read(args, ClusterStateMachine())
        if h.watch:
            watch.check_args(args)
            return None
        assert h.build is not None
        return h.build(args)

    with pytest.raises(InvalidArgument) as undeclared:
        run({"bogus": 1})
    assert undeclared.value.field == "bogus"
    required = [p.name for p in h.declaration.params if p.required]
    if required:
        with pytest.raises(InvalidArgument) as missing:
            run({})
        assert missing.value.field == required[0]


# A made-up operation, declared once: each surface derives its part from the declaration alone.
FROB = Operation(
    name="widget.frob",
    kind=Kind.WRITE,
    summary="Frob a widget",
    http=Http(method="POST", path="/v1/widgets/{id}/frob", versioned=True),
    params=(
        Param(
            name="id",
            type=Type.STR,
            schema={"type": "string"},
            required=True,
            where=Where.PATH,
            cli=Arg("ident"),
        ),
        Param(
            name="times", type=Type.INT, schema={"type": "integer"}, required=True, cli=Arg("times")
        ),
        Param(
            name="tags",
            type=Type.STR_MAP,
            schema={"type": "object"},
            cli=Opt(flag="--tag", help="KEY=VALUE (repeatable)."),
        ),
    ),
    result="Workload",
    client="frob_widget",
    cli=Command(group="widget", name="frob", help="Frob a widget."),
)


def test_a_new_operation_gets_every_surface_from_its_declaration() -> None:
    ep = rest.endpoint(FROB)
    assert (ep.method, ep.path, ep.path_arg, ep.body, ep.versioned, ep.keyed, ep.read) == (
        "POST",
        "/v1/widgets/{id}/frob",
        "id",
        True,
        True,
        True,
        False,
    )
    doc = openapi._operation(FROB)
    assert doc["operationId"] == "widget_frob"
    assert doc["requestBody"]["content"]["application/json"]["schema"] == {
        "type": "object",
        "properties": {"times": {"type": "integer"}, "tags": {"type": "object"}},
        "required": ["times"],
        "additionalProperties": False,
    }
    assert [p["name"] for p in doc["parameters"]] == ["id", "If-Match", "Idempotency-Key"]
    method = generate._method(FROB)
    assert "async def frob_widget(" in method and "times: int," in method
    assert "tags: dict[str, str] | None = None," in method
    assert 'return await self.write("widget.frob", args)' in method


def test_every_declared_command_is_on_the_command_line() -> None:
    for op in OPERATIONS.values():
        if op.cli is None:
            continue
        group = main.commands[op.cli.group]
        assert isinstance(group, click.Group)
        cmd = group.commands[op.cli.name]
        flags = {o for p in cmd.params for o in p.opts}
        for p in op.params:
            if isinstance(p.cli, Opt) and p.cli.flag:
                assert p.cli.flag in flags, (op.name, p.name)
            if isinstance(p.cli, Arg):
                assert p.cli.name in {q.name for q in cmd.params}, (op.name, p.name)
        assert ("--local" in flags) is (not op.is_write), op.name


def test_a_new_operation_gets_its_command_and_runs_through_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, dict[str, object]]] = []

    class FakeClient:
        def write(self, op: str, args: dict[str, object]) -> object:
            calls.append((op, args))
            return {"id": args["id"]}

    @contextlib.contextmanager
    def fake_client_for(api: str, timeout: float, **_kw: object) -> Iterator[FakeClient]:
        yield FakeClient()

    monkeypatch.setattr(state, "client_for", fake_client_for)
    monkeypatch.setenv("UNIVRS_SESSION_DIR", "")  # no cached session: nothing to look up
    cmd = state.command(FROB)
    result = CliRunner().invoke(cmd, ["w1", "3", "--tag", "a=1", "--json"])
    assert result.exit_code == 0, result.output
    assert calls == [("widget.frob", {"id": "w1", "times": 3, "tags": {"a": "1"}})]
    assert json.loads(result.output) == {"id": "w1"}
    usage = CliRunner().invoke(cmd, ["--help"]).output
    assert "IDENT TIMES" in usage and "--tag TEXT" in usage and "--local" not in usage
    bad = CliRunner().invoke(cmd, ["w1", "3", "--tag", "nope"])
    assert bad.exit_code == 2 and "--tag 'nope' must be KEY=VALUE" in bad.output
