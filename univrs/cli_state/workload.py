"""``univrs workload ...``: create, list, get, update, scale and delete workloads."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from univrs.cli import format_table, main
from univrs.cli_state.common import (
    EXIT_USAGE,
    all_pages,
    client_for,
    common_options,
    consistency,
    deleted,
    emit,
    fail,
    labels_text,
    local_option,
    next_note,
    pairs,
)


def _workload_detail(w: dict[str, Any]) -> str:
    s, st = w["spec"], w["status"]
    lines = [
        f"id:        {w['id']}",
        f"name:      {s['name']}",
        f"image:     {s['image']}",
        f"replicas:  {s['replicas']}",
        f"status:    {st['phase']} ({st['running']} running, {st['pending']} pending, "
        f"{st['failed']} failed, {st['unknown']} unknown)",
        f"labels:    {labels_text(s['labels'])}",
        f"version:   {w['version']}",
    ]
    if s["args"]:
        lines.insert(3, f"args:      {' '.join(s['args'])}")
    if s["env"]:
        lines.insert(3, f"env:       {labels_text(s['env'])}")
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
            labels_text(w["spec"]["labels"]),
            w["version"],
        ]
        for w in page["items"]
    ]
    headers = ["ID", "NAME", "IMAGE", "REPLICAS", "PHASE", "RUNNING", "LABELS", "VERSION"]
    return format_table(headers, rows) + next_note(page)


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
            fail(f"--file is not valid JSON: {exc}", EXIT_USAGE)
        if not isinstance(spec, dict):
            fail("--file must hold a JSON object (the workload spec)", EXIT_USAGE)
    flags = {
        "name": name,
        "image": image,
        "replicas": replicas,
        "labels": pairs(labels, "--label") if labels else None,
        "env": pairs(env, "--env") if env else None,
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
            fail(f"the spec needs --{required} (or a --file with {required!r})", EXIT_USAGE)
    return spec


@main.group()
def workload() -> None:
    """Create, list, inspect, update, scale and delete workloads."""


@workload.command("create")
@_spec_options
@click.option("--id", "ident", help="Id of the new workload (default: assigned by the node).")
@common_options
def workload_create(
    api: str, timeout: float, as_json: bool, ident: str | None, **spec_args: Any
) -> None:
    """Create a workload: --name and --image at least (or --file)."""
    spec = _build_spec(**spec_args)
    with client_for(api, timeout) as client:
        emit(as_json, client.create_workload(spec, id=ident), _workload_detail)


@workload.command("list")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE that must match (repeatable).")
@click.option("--name", help="Only workloads with this exact name.")
@click.option("--limit", type=int, help="One page of at most this many (default: all).")
@click.option("--after", help="Start after this id (from a previous page).")
@local_option
@common_options
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
    selector = pairs(labels, "--label") if labels else None
    with client_for(api, timeout) as client:
        page = all_pages(
            client.list_workloads,
            limit,
            labels=selector,
            name=name,
            after=after,
            consistency=consistency(local),
        )
        emit(as_json, page, _workload_table)


@workload.command("get")
@click.argument("ident")
@local_option
@common_options
def workload_get(api: str, timeout: float, as_json: bool, ident: str, local: bool) -> None:
    """Show one workload."""
    with client_for(api, timeout) as client:
        doc = client.get_workload(ident, consistency=consistency(local))
        emit(as_json, doc, _workload_detail)


@workload.command("update")
@click.argument("ident")
@_spec_options
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@common_options
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
    with client_for(api, timeout) as client:
        doc = client.update_workload(ident, spec, expected_version=expected_version)
        emit(as_json, doc, _workload_detail)


@workload.command("scale")
@click.argument("ident")
@click.argument("replicas", type=int)
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@common_options
def workload_scale(
    api: str,
    timeout: float,
    as_json: bool,
    ident: str,
    replicas: int,
    expected_version: int | None,
) -> None:
    """Set a workload's replica count."""
    with client_for(api, timeout) as client:
        doc = client.scale_workload(ident, replicas, expected_version=expected_version)
        emit(as_json, doc, _workload_detail)


@workload.command("delete")
@click.argument("ident")
@click.option("--expected-version", type=int, help="Fail with a conflict unless at this version.")
@common_options
def workload_delete(
    api: str, timeout: float, as_json: bool, ident: str, expected_version: int | None
) -> None:
    """Delete a workload and its instances."""
    with client_for(api, timeout) as client:
        doc = client.delete_workload(ident, expected_version=expected_version)
        emit(as_json, doc, deleted("workload"))
