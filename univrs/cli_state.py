"""The state CLI: ``univrs workload|instance|nodeinfo|credits ...`` on top of the Python client.

Every command takes ``--api`` (or ``$UNIVRS_API``: any node's REST address, or several,
comma-separated; the client discovers the cluster from it and talks the fast protocol to the
leader) and ``--json`` (one JSON document on stdout, for scripts). Human output is a table or
a short summary. Errors are one line on stderr, ``error: <code>: <message>``, with exit code 1
for an error the cluster answered (not found, conflict, invalid argument), 2 for bad usage and
3 when the cluster cannot be reached or has no leader.

``univrs node`` is the daemon, so registered machines are ``univrs nodeinfo``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from univrs.cli import _api_option, format_table, main
from univrs.client.errors import ApiError, InvalidArgument, MalformedRequest, Unavailable
from univrs.client.sync import SyncClient

EXIT_ANSWERED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
PAGE = 1000


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _client(api: str, timeout: float) -> Iterator[SyncClient]:
    try:
        client = SyncClient(api=api, timeout=timeout)
    except ApiError as exc:
        _fail(f"{exc.code}: {exc.message}", EXIT_UNAVAILABLE)
    try:
        yield client
    except ApiError as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        code = EXIT_UNAVAILABLE if isinstance(exc, Unavailable) else EXIT_ANSWERED
        if isinstance(exc, InvalidArgument | MalformedRequest):
            code = EXIT_USAGE
        _fail(f"{exc.code}: {exc.message}{where}", code)
    finally:
        client.close()


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)
    f = click.option(
        "--timeout", default=10.0, show_default=True, help="Seconds before giving up."
    )(f)
    return _api_option(f)  # type: ignore[no-any-return]


def _local_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--local",
        is_flag=True,
        help="Read this node's replica (fast, may be stale) instead of a linearizable read.",
    )(f)


def _consistency(local: bool) -> str | None:
    return "local" if local else None


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            _fail(f"{what} {value!r} must be KEY=VALUE", EXIT_USAGE)
        out[key] = text
    return out


def _emit(as_json: bool, doc: Any, human: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        click.echo(human(doc))


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _all_pages(fetch: Callable[..., Any], limit: int | None, **args: Any) -> dict[str, Any]:
    """One page when ``limit`` is given, else every page."""
    if limit is not None:
        page: dict[str, Any] = fetch(limit=limit, **args)
        return page
    items: list[Any] = []
    after = args.pop("after", None)
    while True:
        page = fetch(limit=PAGE, after=after, **args)
        items.extend(page["items"])
        after = page["next"]
        if after is None:
            return {**page, "items": items, "next": None}


def _next_note(page: dict[str, Any]) -> str:
    return f"\n(more: --after {page['next']})" if page.get("next") else ""


# ---------------------------------------------------------------------------- workloads


def _workload_detail(w: dict[str, Any]) -> str:
    s, st = w["spec"], w["status"]
    lines = [
        f"id:        {w['id']}",
        f"name:      {s['name']}",
        f"image:     {s['image']}",
        f"replicas:  {s['replicas']}",
        f"status:    {st['phase']} ({st['running']} running, {st['pending']} pending, "
        f"{st['failed']} failed, {st['unknown']} unknown)",
        f"labels:    {_labels_text(s['labels'])}",
        f"version:   {w['version']}",
    ]
    if s["args"]:
        lines.insert(3, f"args:      {' '.join(s['args'])}")
    if s["env"]:
        lines.insert(3, f"env:       {_labels_text(s['env'])}")
    if s["ports"]:
        ports = ", ".join(
            f"{p['container_port']}/{p['protocol']}" + (f" ({p['name']})" if p["name"] else "")
            for p in s["ports"]
        )
        lines.insert(3, f"ports:     {ports}")
    res = s["resources"]
    if res["cpu_millis"] or res["memory_bytes"]:
        lines.insert(3, f"resources: {res['cpu_millis']}m cpu, {res['memory_bytes']} bytes")
    return "\n".join(lines)


def _workload_table(page: dict[str, Any]) -> str:
    rows = [
        [
            w["id"],
            w["spec"]["name"],
            w["spec"]["image"],
            w["spec"]["replicas"],
            w["status"]["phase"],
            w["status"]["running"],
            _labels_text(w["spec"]["labels"]),
            w["version"],
        ]
        for w in page["items"]
    ]
    headers = ["ID", "NAME", "IMAGE", "REPLICAS", "PHASE", "RUNNING", "LABELS", "VERSION"]
    return format_table(headers, rows) + _next_note(page)


def _parse_port(text: str) -> dict[str, Any]:
    """``80``, ``80/udp``, ``8080/tcp:http`` or ``8080:http``."""
    rest, _, name = text.partition(":")
    number, _, proto = rest.partition("/")
    if not number.isdigit():
        _fail(f"--port {text!r} must be PORT[/PROTOCOL][:NAME]", EXIT_USAGE)
    port: dict[str, Any] = {"container_port": int(number)}
    if proto:
        port["protocol"] = proto
    if name:
        port["name"] = name
    return port


def _spec_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--file", "spec_file", type=click.File("r"), help="Spec as JSON ('-': stdin)."
        ),
        click.option("--name", help="Workload name (DNS-style: lowercase, digits, '-', '.')."),
        click.option("--image", help="Container image reference."),
        click.option("--replicas", type=int, help="Desired instances (default 1)."),
        click.option("--label", "labels", multiple=True, help="KEY=VALUE (repeatable)."),
        click.option("--env", "env", multiple=True, help="KEY=VALUE (repeatable)."),
        click.option("--arg", "args", multiple=True, help="Container argument (repeatable)."),
        click.option("--port", "ports", multiple=True, help="PORT[/tcp|udp|sctp][:NAME]."),
        click.option("--cpu-millis", type=int, help="CPU request in thousandths of a core."),
        click.option("--memory-bytes", type=int, help="Memory request in bytes."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _build_spec(
    spec_file: Any,
    name: str | None,
    image: str | None,
    replicas: int | None,
    labels: tuple[str, ...],
    env: tuple[str, ...],
    args: tuple[str, ...],
    ports: tuple[str, ...],
    cpu_millis: int | None,
    memory_bytes: int | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if spec_file is not None:
        try:
            spec = json.load(spec_file)
        except ValueError as exc:
            _fail(f"--file is not valid JSON: {exc}", EXIT_USAGE)
        if not isinstance(spec, dict):
            _fail("--file must hold a JSON object (the workload spec)", EXIT_USAGE)
    flags = {
        "name": name,
        "image": image,
        "replicas": replicas,
        "labels": _pairs(labels, "--label") if labels else None,
        "env": _pairs(env, "--env") if env else None,
        "args": list(args) if args else None,
        "ports": [_parse_port(p) for p in ports] if ports else None,
    }
    spec.update({k: v for k, v in flags.items() if v is not None})
    if cpu_millis is not None or memory_bytes is not None:
        resources = dict(spec.get("resources") or {})
        if cpu_millis is not None:
            resources["cpu_millis"] = cpu_millis
        if memory_bytes is not None:
            resources["memory_bytes"] = memory_bytes
        spec["resources"] = resources
    for required in ("name", "image"):
        if required not in spec:
            _fail(f"the spec needs --{required} (or a --file with {required!r})", EXIT_USAGE)
    return spec


@main.group()
def workload() -> None:
    """Create, list, inspect, update, scale and delete workloads."""


@workload.command("create")
@_spec_options
@click.option("--id", "ident", help="Id of the new workload (default: assigned by the node).")
@_common
def workload_create(
    api: str, timeout: float, as_json: bool, ident: str | None, **spec_args: Any
) -> None:
    """Create a workload: --name and --image at least (or --file)."""
    spec = _build_spec(**spec_args)
    with _client(api, timeout) as client:
        _emit(as_json, client.create_workload(spec, id=ident), _workload_detail)


@workload.command("list")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE that must match (repeatable).")
@click.option("--name", help="Only workloads with this exact name.")
@click.option("--limit", type=int, help="One page of at most this many (default: all).")
@click.option("--after", help="Start after this id (from a previous page).")
@_local_option
@_common
def workload_list(
    api: str,
    timeout: float,
    as_json: bool,
    labels: tuple[str, ...],
    name: str | None,
    limit: int | None,
    after: str | None,
    local: bool,
) -> None:
    """List workloads (sorted by id)."""
    selector = _pairs(labels, "--label") if labels else None
    with _client(api, timeout) as client:
        page = _all_pages(
            client.list_workloads,
            limit,
            labels=selector,
            name=name,
            after=after,
            consistency=_consistency(local),
        )
        _emit(as_json, page, _workload_table)


@workload.command("get")
@click.argument("ident")
@_local_option
@_common
def workload_get(api: str, timeout: float, as_json: bool, ident: str, local: bool) -> None:
    """Show one workload."""
    with _client(api, timeout) as client:
        doc = client.get_workload(ident, consistency=_consistency(local))
        _emit(as_json, doc, _workload_detail)


@workload.command("update")
@click.argument("ident")
@_spec_options
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@_common
def workload_update(
    api: str,
    timeout: float,
    as_json: bool,
    ident: str,
    expected_version: int | None,
    **spec_args: Any,
) -> None:
    """Replace a workload's whole spec (--name and --image at least, or --file)."""
    spec = _build_spec(**spec_args)
    with _client(api, timeout) as client:
        doc = client.update_workload(ident, spec, expected_version=expected_version)
        _emit(as_json, doc, _workload_detail)


@workload.command("scale")
@click.argument("ident")
@click.argument("replicas", type=int)
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@_common
def workload_scale(
    api: str,
    timeout: float,
    as_json: bool,
    ident: str,
    replicas: int,
    expected_version: int | None,
) -> None:
    """Set a workload's replica count."""
    with _client(api, timeout) as client:
        doc = client.scale_workload(ident, replicas, expected_version=expected_version)
        _emit(as_json, doc, _workload_detail)


def _deleted(what: str) -> Callable[[Any], str]:
    return lambda d: f"deleted {what} {d['id']} (at index {d['version']})"


@workload.command("delete")
@click.argument("ident")
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@_common
def workload_delete(
    api: str, timeout: float, as_json: bool, ident: str, expected_version: int | None
) -> None:
    """Delete a workload and its instances."""
    with _client(api, timeout) as client:
        doc = client.delete_workload(ident, expected_version=expected_version)
        _emit(as_json, doc, _deleted("workload"))


# ---------------------------------------------------------------------------- instances


def _instance_table(page: dict[str, Any]) -> str:
    rows = [
        [i["id"], i["workload_id"], i["node_id"] or "-", i["status"], i["version"], i["message"]]
        for i in page["items"]
    ]
    headers = ["ID", "WORKLOAD", "NODE", "STATUS", "VERSION", "MESSAGE"]
    return format_table(headers, rows) + _next_note(page)


def _instance_detail(i: dict[str, Any]) -> str:
    return format_table(
        ["ID", "WORKLOAD", "NODE", "STATUS", "VERSION", "MESSAGE"],
        [[i["id"], i["workload_id"], i["node_id"] or "-", i["status"], i["version"], i["message"]]],
    )


@main.group()
def instance() -> None:
    """Create, list, inspect, report on and delete instances."""


@instance.command("create")
@click.argument("workload_id")
@click.option("--node", "node_id", help="Place it on this node (default: unscheduled).")
@click.option("--id", "ident", help="Id of the new instance (default: assigned by the node).")
@_common
def instance_create(
    api: str,
    timeout: float,
    as_json: bool,
    workload_id: str,
    node_id: str | None,
    ident: str | None,
) -> None:
    """Create an instance of a workload."""
    with _client(api, timeout) as client:
        doc = client.create_instance(workload_id, node_id=node_id, id=ident)
        _emit(as_json, doc, _instance_detail)


@instance.command("list")
@click.option("--workload", "workload_id", help="Only instances of this workload.")
@click.option("--node", "node_id", help="Only instances on this node.")
@click.option("--status", help="Only instances with this status.")
@click.option("--limit", type=int, help="One page of at most this many (default: all).")
@click.option("--after", help="Start after this id (from a previous page).")
@_local_option
@_common
def instance_list(
    api: str,
    timeout: float,
    as_json: bool,
    workload_id: str | None,
    node_id: str | None,
    status: str | None,
    limit: int | None,
    after: str | None,
    local: bool,
) -> None:
    """List instances (sorted by id)."""
    with _client(api, timeout) as client:
        page = _all_pages(
            client.list_instances,
            limit,
            workload_id=workload_id,
            node_id=node_id,
            status=status,
            after=after,
            consistency=_consistency(local),
        )
        _emit(as_json, page, _instance_table)


@instance.command("get")
@click.argument("ident")
@_local_option
@_common
def instance_get(api: str, timeout: float, as_json: bool, ident: str, local: bool) -> None:
    """Show one instance."""
    with _client(api, timeout) as client:
        doc = client.get_instance(ident, consistency=_consistency(local))
        _emit(as_json, doc, _instance_detail)


@instance.command("status")
@click.argument("ident")
@click.argument("status")
@click.option("--message", help="Free text (exit reason, error).")
@click.option("--node", "node_id", help="Bind an unscheduled instance to this node.")
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@_common
def instance_status(
    api: str,
    timeout: float,
    as_json: bool,
    ident: str,
    status: str,
    message: str | None,
    node_id: str | None,
    expected_version: int | None,
) -> None:
    """Report an instance's STATUS (pending, running, succeeded, failed, unknown)."""
    with _client(api, timeout) as client:
        doc = client.update_instance_status(
            ident, status, message=message, node_id=node_id, expected_version=expected_version
        )
        _emit(as_json, doc, _instance_detail)


@instance.command("delete")
@click.argument("ident")
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@_common
def instance_delete(
    api: str, timeout: float, as_json: bool, ident: str, expected_version: int | None
) -> None:
    """Delete an instance."""
    with _client(api, timeout) as client:
        doc = client.delete_instance(ident, expected_version=expected_version)
        _emit(as_json, doc, _deleted("instance"))


# ---------------------------------------------------------------------------- nodes


def _node_table(page: dict[str, Any]) -> str:
    rows = [
        [
            n["id"],
            n["status"],
            ",".join(n["addresses"]) or "-",
            n["capacity"]["cpu_millis"],
            n["capacity"]["memory_bytes"],
            _labels_text(n["labels"]),
            n["version"],
        ]
        for n in page["items"]
    ]
    headers = ["ID", "STATUS", "ADDRESSES", "CPU_MILLIS", "MEMORY_BYTES", "LABELS", "VERSION"]
    return format_table(headers, rows) + _next_note(page)


def _node_detail(n: dict[str, Any]) -> str:
    return _node_table({"items": [n], "next": None})


@main.group()
def nodeinfo() -> None:
    """Register, list, inspect, update and deregister the machines that run instances."""


@nodeinfo.command("register")
@click.argument("ident")
@click.option("--address", "addresses", multiple=True, help="How to reach it (repeatable).")
@click.option("--cpu-millis", type=int, help="CPU capacity in thousandths of a core.")
@click.option("--memory-bytes", type=int, help="Memory capacity in bytes.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE (repeatable).")
@click.option("--status", help="ready (default), not-ready, draining or down.")
@_common
def nodeinfo_register(
    api: str,
    timeout: float,
    as_json: bool,
    ident: str,
    addresses: tuple[str, ...],
    cpu_millis: int | None,
    memory_bytes: int | None,
    labels: tuple[str, ...],
    status: str | None,
) -> None:
    """Register a node."""
    capacity = None
    if cpu_millis is not None or memory_bytes is not None:
        capacity = {"cpu_millis": cpu_millis or 0, "memory_bytes": memory_bytes or 0}
    with _client(api, timeout) as client:
        doc = client.register_node(
            ident,
            addresses=list(addresses) or None,
            capacity=capacity,
            labels=_pairs(labels, "--label") if labels else None,
            status=status,
        )
        _emit(as_json, doc, _node_detail)


@nodeinfo.command("list")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE that must match (repeatable).")
@click.option("--status", help="Only nodes with this status.")
@click.option("--limit", type=int, help="One page of at most this many (default: all).")
@click.option("--after", help="Start after this id (from a previous page).")
@_local_option
@_common
def nodeinfo_list(
    api: str,
    timeout: float,
    as_json: bool,
    labels: tuple[str, ...],
    status: str | None,
    limit: int | None,
    after: str | None,
    local: bool,
) -> None:
    """List registered nodes (sorted by id)."""
    selector = _pairs(labels, "--label") if labels else None
    with _client(api, timeout) as client:
        page = _all_pages(
            client.list_nodes,
            limit,
            labels=selector,
            status=status,
            after=after,
            consistency=_consistency(local),
        )
        _emit(as_json, page, _node_table)


@nodeinfo.command("get")
@click.argument("ident")
@_local_option
@_common
def nodeinfo_get(api: str, timeout: float, as_json: bool, ident: str, local: bool) -> None:
    """Show one registered node."""
    with _client(api, timeout) as client:
        _emit(as_json, client.get_node(ident, consistency=_consistency(local)), _node_detail)


@nodeinfo.command("status")
@click.argument("ident")
@click.argument("status")
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@_common
def nodeinfo_status(
    api: str,
    timeout: float,
    as_json: bool,
    ident: str,
    status: str,
    expected_version: int | None,
) -> None:
    """Set a node's STATUS (ready, not-ready, draining, down)."""
    with _client(api, timeout) as client:
        doc = client.update_node_status(ident, status, expected_version=expected_version)
        _emit(as_json, doc, _node_detail)


@nodeinfo.command("deregister")
@click.argument("ident")
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@_common
def nodeinfo_deregister(
    api: str, timeout: float, as_json: bool, ident: str, expected_version: int | None
) -> None:
    """Deregister a node (its instances are deleted)."""
    with _client(api, timeout) as client:
        doc = client.deregister_node(ident, expected_version=expected_version)
        _emit(as_json, doc, _deleted("node"))


# ---------------------------------------------------------------------------- credits


@main.group()
def credits() -> None:
    """Mint, transfer and inspect credits."""


@credits.command("mint")
@click.argument("peer")
@click.argument("amount", type=int)
@click.option("--reason", required=True, help="Why (kept for audit).")
@_common
def credits_mint(
    api: str, timeout: float, as_json: bool, peer: str, amount: int, reason: str
) -> None:
    """Create AMOUNT new credits for PEER."""
    with _client(api, timeout) as client:
        doc = client.mint_credits(peer, amount, reason)
        _emit(as_json, doc, lambda d: f"minted {amount} for {d['peer']}: balance {d['balance']}")


@credits.command("transfer")
@click.argument("from_peer")
@click.argument("to_peer")
@click.argument("amount", type=int)
@_common
def credits_transfer(
    api: str, timeout: float, as_json: bool, from_peer: str, to_peer: str, amount: int
) -> None:
    """Move AMOUNT credits from FROM_PEER to TO_PEER."""
    with _client(api, timeout) as client:
        doc = client.transfer_credits(from_peer, to_peer, amount)

        def human(d: dict[str, Any]) -> str:
            src, dst = d["from"], d["to"]
            return (
                f"moved {d['amount']} from {src['peer']} (now {src['balance']}) "
                f"to {dst['peer']} (now {dst['balance']})"
            )

        _emit(as_json, doc, human)


@credits.command("balance")
@click.argument("peer", required=False)
@_local_option
@_common
def credits_balance(api: str, timeout: float, as_json: bool, peer: str | None, local: bool) -> None:
    """Show PEER's balance, or every positive balance without PEER."""
    with _client(api, timeout) as client:
        if peer is not None:
            doc = client.balance(peer, consistency=_consistency(local))
            _emit(as_json, doc, lambda d: f"{d['peer']}: {d['balance']}")
            return
        page = _all_pages(client.list_balances, None, consistency=_consistency(local))

        def human(p: dict[str, Any]) -> str:
            rows = [[b["peer"], b["balance"]] for b in p["items"]]
            return format_table(["PEER", "BALANCE"], rows) + f"\ntotal: {p['total_supply']}"

        _emit(as_json, page, human)
