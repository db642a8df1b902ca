"""The state commands: ``univrs workload|instance|nodeinfo|credits|token ...``, derived from the
operations table (``univrs.service.operations``).

Every operation with a CLI ``Command`` becomes ``univrs <group> <name>``: its arguments become
positional arguments (``Arg``) or options (``Opt``) as declared, converted by their type
(a repeatable option for a list, ``KEY=VALUE`` options for a map, ``--file`` or ``--name``,
``--image`` ... for a workload spec, ``--cpu-millis``/``--memory-bytes`` for resources);
reads also take ``--local``; a list without ``--limit`` fetches every page. The command runs
the operation through the Python client (``write`` for writes: exactly once, with a key) and
prints the result with the view of its schema (``univrs.cli.views``).

Every command takes ``--api`` (or ``$UNIVRS_API``: any node's REST address, or several,
comma-separated; the client discovers the cluster from it and talks the fast protocol to the
leader), ``--timeout`` and ``--json`` (one JSON document on stdout, for scripts). Errors are
one line on stderr, ``error: <code>: <message>``, with exit code 1 for an error the cluster
answered (not found, conflict), 2 for bad usage or an invalid argument and 3 when the cluster
cannot be reached or has no leader.

One command is written out: ``univrs credits balance [PEER]`` runs ``credits.balance`` with a
PEER and ``credits.list`` without.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from univrs.cli.common import (
    EXIT_USAGE,
    all_pages,
    client_for,
    common_options,
    consistency,
    emit,
    fail,
    local_option,
    pairs,
)
from univrs.cli.views import VIEWS
from univrs.service.operations import (
    CLI_GROUPS,
    OPERATIONS,
    Arg,
    Operation,
    Opt,
    Param,
    Type,
)

# ---------------------------------------------------------------- values made of several options


def _spec_options(p: Param) -> list[click.Option]:
    """The options of a workload spec (``--file`` or the fields one by one)."""
    n = p.name
    return [
        click.Option(
            ["--file", f"{n}_file"], type=click.File("r"), help="Spec as JSON ('-': stdin)."
        ),
        click.Option(
            ["--name", f"{n}_name"], help="Workload name (DNS-style: lowercase, digits, '-', '.')."
        ),
        click.Option(["--image", f"{n}_image"], help="Container image reference."),
        click.Option(
            ["--replicas", f"{n}_replicas"], type=int, help="Desired instances (default 1)."
        ),
        click.Option(["--label", f"{n}_labels"], multiple=True, help="KEY=VALUE (repeatable)."),
        click.Option(["--env", f"{n}_env"], multiple=True, help="KEY=VALUE (repeatable)."),
        click.Option(
            ["--arg", f"{n}_args"], multiple=True, help="Container argument (repeatable)."
        ),
        click.Option(["--port", f"{n}_ports"], multiple=True, help="PORT[/tcp|udp|sctp][:NAME]."),
        *_resource_options(p, "request"),
    ]


def _resource_options(p: Param, noun: str) -> list[click.Option]:
    return [
        click.Option(
            ["--cpu-millis", f"{p.name}_cpu_millis"],
            type=int,
            help=f"CPU {noun} in thousandths of a core.",
        ),
        click.Option(
            ["--memory-bytes", f"{p.name}_memory_bytes"], type=int, help=f"Memory {noun} in bytes."
        ),
    ]


def _resources(p: Param, values: dict[str, Any]) -> dict[str, int] | None:
    cpu, memory = values[f"{p.name}_cpu_millis"], values[f"{p.name}_memory_bytes"]
    if cpu is None and memory is None:
        return None
    return {"cpu_millis": cpu or 0, "memory_bytes": memory or 0}


def _parse_port(text: str) -> dict[str, Any]:
    """``80``, ``80/udp``, ``8080/tcp:http`` or ``8080:http``."""
    rest, _, name = text.partition(":")
    number, _, proto = rest.partition("/")
    if not number.isdigit():
        fail(f"--port {text!r} must be PORT[/PROTOCOL][:NAME]", EXIT_USAGE)
    port: dict[str, Any] = {"container_port": int(number)}
    if proto:
        port["protocol"] = proto
    if name:
        port["name"] = name
    return port


def _spec(p: Param, values: dict[str, Any]) -> dict[str, Any]:
    """The workload spec: the ``--file`` (if any) with the flags given on top."""
    n = p.name
    spec: dict[str, Any] = {}
    spec_file = values[f"{n}_file"]
    if spec_file is not None:
        try:
            spec = json.load(spec_file)
        except ValueError as exc:
            fail(f"--file is not valid JSON: {exc}", EXIT_USAGE)
        if not isinstance(spec, dict):
            fail("--file must hold a JSON object (the workload spec)", EXIT_USAGE)
    labels, env = values[f"{n}_labels"], values[f"{n}_env"]
    args, ports = values[f"{n}_args"], values[f"{n}_ports"]
    flags = {
        "name": values[f"{n}_name"],
        "image": values[f"{n}_image"],
        "replicas": values[f"{n}_replicas"],
        "labels": pairs(labels, "--label") if labels else None,
        "env": pairs(env, "--env") if env else None,
        "args": list(args) if args else None,
        "ports": [_parse_port(port) for port in ports] if ports else None,
    }
    spec.update({k: v for k, v in flags.items() if v is not None})
    resources = {
        k: values[f"{n}_{k}"]
        for k in ("cpu_millis", "memory_bytes")
        if values[f"{n}_{k}"] is not None
    }
    if resources:  # on top of the file's
        spec["resources"] = {**dict(spec.get("resources") or {}), **resources}
    for required in ("name", "image"):
        if required not in spec:
            fail(f"the spec needs --{required} (or a --file with {required!r})", EXIT_USAGE)
    return spec


# ---------------------------------------------------------------- one command per operation


def _click_params(p: Param) -> list[click.Parameter]:
    form = p.cli
    if form is None:
        return []
    kind = int if p.type is Type.INT else None
    if isinstance(form, Arg):
        return [click.Argument([form.name], type=kind)]
    assert isinstance(form, Opt)
    if p.type is Type.WORKLOAD_SPEC:
        return list(_spec_options(p))
    if p.type is Type.RESOURCES:
        return list(_resource_options(p, form.help))
    multiple = p.type in (Type.STR_LIST, Type.STR_MAP)
    return [
        click.Option(
            [form.flag, p.name],
            type=kind,
            multiple=multiple,
            required=form.required,
            help=form.help,
        )
    ]


def _value(p: Param, values: dict[str, Any]) -> Any:
    """The argument's value from the command line (None: not given)."""
    form = p.cli
    if p.type is Type.WORKLOAD_SPEC:
        return _spec(p, values)
    if p.type is Type.RESOURCES:
        return _resources(p, values)
    value = values[form.name if isinstance(form, Arg) else p.name]
    if p.type is Type.STR_LIST:
        return list(value) or None
    if p.type is Type.STR_MAP:
        assert isinstance(form, Opt)
        return pairs(value, form.flag) if value else None
    return value


def _show(op: Operation, as_json: bool, doc: Any, args: dict[str, Any]) -> None:
    view = VIEWS.get(op.result)
    if view is None:
        as_json = True
    emit(as_json, doc, lambda d: view(d, op, args) if view is not None else "")


def _run(op: Operation, api: str, timeout: float, local: bool, args: dict[str, Any]) -> Any:
    with client_for(api, timeout) as client:
        if op.keyed:
            return client.write(op.name, args)
        if op.is_write:  # takes no idempotency key (token bootstrap): sent once
            return client.call(op.name, args)
        level = consistency(local)
        if op.paged:
            return all_pages(lambda a: client.call(op.name, a, consistency=level), args)
        return client.call(op.name, args, consistency=level)


def _decorator_params(decorate: Callable[[Callable[..., Any]], Any]) -> list[click.Parameter]:
    """The parameters that option decorators (``common_options``) add, in their help order."""

    def probe() -> None: ...

    decorate(probe)
    return list(reversed(probe.__click_params__))  # type: ignore[attr-defined]


def command(op: Operation) -> click.Command:
    """The CLI command of ``op`` (which has a ``cli`` declaration)."""
    assert op.cli is not None, op.name
    params: list[click.Parameter] = [q for p in op.params for q in _click_params(p)]
    if not op.is_write:
        params += _decorator_params(local_option)
    params += _decorator_params(common_options)
    names = [q.name for q in params]
    assert len(names) == len(set(names)), f"{op.name}: two parameters share a name"

    def callback(
        api: str, timeout: float, as_json: bool, local: bool = False, **values: Any
    ) -> None:
        args = {}
        for p in op.params:
            if p.cli is not None and (value := _value(p, values)) is not None:
                args[p.name] = value
        _show(op, as_json, _run(op, api, timeout, local, args), args)

    return click.Command(op.cli.name, callback=callback, params=params, help=op.cli.help)


# ---------------------------------------------------------------- written out


@click.command("balance")
@click.argument("peer", required=False)
@local_option
@common_options
def credits_balance(api: str, timeout: float, as_json: bool, peer: str | None, local: bool) -> None:
    """Show PEER's balance, or every positive balance without PEER."""
    op = OPERATIONS["credits.balance" if peer is not None else "credits.list"]
    args = {} if peer is None else {"peer": peer}
    _show(op, as_json, _run(op, api, timeout, local, args), args)


def groups() -> list[click.Group]:
    """The command groups of the state commands, with every command added."""
    out = {name: click.Group(name, help=text) for name, text in CLI_GROUPS.items()}
    for op in OPERATIONS.values():
        if op.cli is not None:
            out[op.cli.group].add_command(command(op))
    out["credits"].add_command(credits_balance)
    return list(out.values())
