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
one line on stderr, ``error: <code>: <message>``, with the exit codes of docs/cli.md: 1 for an
error the cluster answered (not found, conflict), 2 for bad usage or an invalid argument and 3
when the cluster cannot be reached or has no leader.

One command is written out: ``univrs credits balance [PEER]`` runs ``credits.balance`` with a
PEER and ``credits.list`` without.

Workloads are addressed by id, by a unique prefix of their id, or (``get``, ``scale``,
``delete``) by ``--name`` when one workload has that name. An id that is not found is looked up
as a prefix; a prefix or name that matches several workloads is a usage error (exit 2) that
lists them. The lookup is the CLI's (one ``workload.list``), not the API's.
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
from univrs.cli.session import RESERVE, SessionCache, cached_session
from univrs.cli.views import VIEWS
from univrs.errors import NotFound
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


# Workload commands whose ID may be a unique prefix; those that also take ``--name`` instead.
BY_PREFIX = ("workload.get", "workload.update", "workload.scale", "workload.delete")
BY_NAME = ("workload.get", "workload.scale", "workload.delete")


def _matches(client: Any, level: str | None, **filters: str) -> list[dict[str, Any]]:
    listed = all_pages(lambda a: client.call("workload.list", a, consistency=level), filters)
    return list(listed["items"])


def _ambiguous(what: str, items: list[dict[str, Any]]) -> None:
    shown = ", ".join(f"{w['id']} ({w['spec']['name']})" for w in items[:10])
    more = f" and {len(items) - 10} more" if len(items) > 10 else ""
    fail(f"{what} matches {len(items)} workloads: {shown}{more}; give more of the id", EXIT_USAGE)


def _resolve(client: Any, args: dict[str, Any], name: str | None, level: str | None) -> None:
    """Turn ``--name`` or an id prefix into the workload's id, in ``args`` (see the module
    docstring); fails (exit 1 or 2) when nothing or several match."""
    if name is not None:
        found = _matches(client, level, name=name)
        if not found:
            fail(f"not-found: no workload is named {name!r}")
        if len(found) > 1:
            _ambiguous(f"--name {name!r}", found)
        args["id"] = found[0]["id"]
        return
    prefix = args["id"]
    found = [w for w in _matches(client, level) if w["id"].startswith(prefix)]
    if len(found) > 1:
        _ambiguous(f"id prefix {prefix!r}", found)
    if found:
        args["id"] = found[0]["id"]


def _call(client: Any, op: Operation, args: dict[str, Any], level: str | None) -> Any:
    if op.keyed:
        return client.write(op.name, args)
    if op.is_write:  # takes no idempotency key (token bootstrap): sent once
        return client.call(op.name, args)
    if op.paged:
        return all_pages(lambda a: client.call(op.name, a, consistency=level), args)
    return client.call(op.name, args, consistency=level)


def _run(
    op: Operation,
    api: str,
    timeout: float,
    local: bool,
    args: dict[str, Any],
    by_name: str | None = None,
) -> Any:
    if op.is_write:
        with cached_session(api) as cache:
            if cache is None:
                return _run_with(op, api, timeout, local, args, by_name, None)
            held = cache.load()
            if held is not None:
                cache.save(held[0], held[1] + RESERVE)  # never reuse a number, even after a crash
            return _run_with(op, api, timeout, local, args, by_name, (cache, held))
    return _run_with(op, api, timeout, local, args, by_name, None)


def _run_with(
    op: Operation,
    api: str,
    timeout: float,
    local: bool,
    args: dict[str, Any],
    by_name: str | None,
    session: tuple[SessionCache, tuple[str, int] | None] | None,
) -> Any:
    with client_for(api, timeout, stay=local) as client:
        if session is not None and session[1] is not None:
            client.adopt_session(*session[1])
        try:
            return _resolved_call(client, op, args, by_name, consistency(local))
        finally:
            if session is not None:
                kept = client.detach_sessions()
                if kept:
                    session[0].save(*kept[-1])


def _resolved_call(
    client: Any, op: Operation, args: dict[str, Any], by_name: str | None, level: str | None
) -> Any:
    """Run ``op``, after turning ``--name`` or an id prefix into an id (BY_PREFIX)."""
    if by_name is not None:
        _resolve(client, args, by_name, level)
    elif op.name in BY_PREFIX:
        try:
            return _call(client, op, args, level)
        except NotFound:  # not an id: perhaps a unique prefix of one
            given = args["id"]
            _resolve(client, args, None, level)
            if args["id"] == given:
                raise
    return _call(client, op, args, level)


def _decorator_params(decorate: Callable[[Callable[..., Any]], Any]) -> list[click.Parameter]:
    """The parameters that option decorators (``common_options``) add, in their help order."""

    def probe() -> None: ...

    decorate(probe)
    return list(reversed(probe.__click_params__))  # type: ignore[attr-defined]


def _shift_for_name(
    positional: list[click.Argument], values: dict[str, Any], by_name: str | None
) -> None:
    """``scale --name web 5``: click gave ``5`` to the optional ID; with ``--name`` the
    positional values move one place right (converted by their own types), and every
    positional but the ID is required."""
    names = [q.name or "" for q in positional]
    given = [values[n] for n in names if values[n] is not None]
    if by_name is not None:
        if len(given) >= len(names):
            fail("give the workload's ID or --name, not both", EXIT_USAGE)
        given = [None, *given]
    elif not given:
        fail("give the workload's ID (or a unique prefix) or --name NAME", EXIT_USAGE)
    for q, name, value in zip(positional, names, [*given, *[None] * len(names)], strict=False):
        if q is not positional[0] and value is None:
            fail(f"missing argument {q.human_readable_name}", EXIT_USAGE)
        values[name] = None if value is None else q.type.convert(value, q, None)


def command(op: Operation) -> click.Command:
    """The CLI command of ``op`` (which has a ``cli`` declaration)."""
    assert op.cli is not None, op.name
    params: list[click.Parameter] = [q for p in op.params for q in _click_params(p)]
    positional = [q for q in params if isinstance(q, click.Argument)]
    if op.name in BY_NAME:  # ID or --name: every positional optional, checked in the callback
        for q in positional:
            q.required = False
        params.append(
            click.Option(["--name", "by_name"], help="The workload with this (unique) name.")
        )
    if not op.is_write:
        params += _decorator_params(local_option)
    params += _decorator_params(common_options)
    names = [q.name for q in params]
    assert len(names) == len(set(names)), f"{op.name}: two parameters share a name"

    def callback(
        api: str,
        timeout: float,
        as_json: bool,
        local: bool = False,
        by_name: str | None = None,
        **values: Any,
    ) -> None:
        if op.name in BY_NAME:
            _shift_for_name(positional, values, by_name)
        args = {}
        for p in op.params:
            if p.cli is not None and (value := _value(p, values)) is not None:
                args[p.name] = value
        _show(op, as_json, _run(op, api, timeout, local, args, by_name), args)

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
