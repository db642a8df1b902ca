"""How the state commands show a result to a person (``--json`` prints the document itself).

One view per result schema of ``univrs.service.operations`` (``Workload``, ``NodeList`` ...);
a view gets the result, the operation and the arguments it was called with. An operation
whose result has no view here prints JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from univrs.cli.common import format_table
from univrs.service.operations import Operation

View = Callable[[Any, Operation, dict[str, Any]], str]


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def next_note(page: dict[str, Any]) -> str:
    return f"\n(more: --after {page['next']})" if page.get("next") else ""


# ---------------------------------------------------------------- workloads


def workload_detail(w: dict[str, Any]) -> str:
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


def workload_table(page: dict[str, Any]) -> str:
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


# ---------------------------------------------------------------- instances

_INSTANCE_HEADERS = ["ID", "WORKLOAD", "NODE", "STATUS", "VERSION", "MESSAGE"]


def _instance_row(i: dict[str, Any]) -> list[Any]:
    return [i["id"], i["workload_id"], i["node_id"] or "-", i["status"], i["version"], i["message"]]


def instance_table(page: dict[str, Any]) -> str:
    rows = [_instance_row(i) for i in page["items"]]
    return format_table(_INSTANCE_HEADERS, rows) + next_note(page)


def instance_detail(i: dict[str, Any]) -> str:
    return format_table(_INSTANCE_HEADERS, [_instance_row(i)])


# ---------------------------------------------------------------- nodes


def node_table(page: dict[str, Any]) -> str:
    rows = [
        [
            n["id"],
            n["status"],
            ",".join(n["addresses"]) or "-",
            n["capacity"]["cpu_millis"],
            n["capacity"]["memory_bytes"],
            labels_text(n["labels"]),
            n["version"],
        ]
        for n in page["items"]
    ]
    headers = ["ID", "STATUS", "ADDRESSES", "CPU_MILLIS", "MEMORY_BYTES", "LABELS", "VERSION"]
    return format_table(headers, rows) + next_note(page)


def node_detail(n: dict[str, Any]) -> str:
    return node_table({"items": [n], "next": None})


# ---------------------------------------------------------------- credits


def transferred(d: dict[str, Any]) -> str:
    src, dst = d["from"], d["to"]
    return (
        f"moved {d['amount']} from {src['peer']} (now {src['balance']}) "
        f"to {dst['peer']} (now {dst['balance']})"
    )


def balances(p: dict[str, Any]) -> str:
    rows = [[b["peer"], b["balance"]] for b in p["items"]]
    return format_table(["PEER", "BALANCE"], rows) + f"\ntotal: {p['total_supply']}"


# ---------------------------------------------------------------- by result


def _doc_only(fn: Callable[[Any], str]) -> View:
    def view(doc: Any, op: Operation, args: dict[str, Any]) -> str:
        if isinstance(doc, dict) and set(doc) == {"id", "version", "deleted"}:
            # A write that applied, its object deleted by a later command (univrs/api/opargs.py
            # ``gone``): no object to show.
            return f"{doc['id']}: applied at version {doc['version']}, deleted since"
        return fn(doc)

    return view


def reconcile_status(d: dict[str, Any]) -> str:
    rows = [
        [
            w["workload"],
            w["desired"],
            w["live"],
            w["to_place"],
            w["to_remove"],
            w["pending"],
            w["reason"] or "-",
        ]
        for w in d["workloads"]
    ]
    table = format_table(
        ["WORKLOAD", "DESIRED", "LIVE", "TO PLACE", "TO REMOVE", "PENDING", "REASON"], rows
    )
    state = (
        "converged"
        if d["converged"]
        else (f"{d['to_place']} to place, {d['to_remove']} to remove, {d['pending']} pending")
    )
    return f"{table}\nat revision {d['revision']}: {state}"


# ---------------------------------------------------------------- tokens


def token_created(t: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"id:      {t['id']}",
            f"name:    {t['name']}",
            f"roles:   {','.join(t['roles'])}",
            f"secret:  {t['secret']}",
            "(the secret is shown only now and stored nowhere: keep it; UNIVRS_TOKEN=<secret>)",
        ]
    )


def token_table(page: dict[str, Any]) -> str:
    rows = [[t["id"], t["name"], ",".join(t["roles"]), t["created_index"]] for t in page["items"]]
    return format_table(["ID", "NAME", "ROLES", "CREATED"], rows) + next_note(page)


VIEWS: dict[str, View] = {
    "Workload": _doc_only(workload_detail),
    "WorkloadList": _doc_only(workload_table),
    "Instance": _doc_only(instance_detail),
    "InstanceList": _doc_only(instance_table),
    "Node": _doc_only(node_detail),
    "NodeList": _doc_only(node_table),
    # "node.deregister" -> "deleted node n1 (at index 12)"
    "Deleted": lambda d, op, args: (
        f"deleted {op.name.split('.')[0]} {d['id']} (at index {d['version']})"
    ),
    "Minted": lambda d, op, args: (
        f"minted {args['amount']} for {d['peer']}: balance {d['balance']}"
    ),
    "Transferred": _doc_only(transferred),
    "Balance": lambda d, op, args: f"{d['peer']}: {d['balance']}",
    "BalanceList": _doc_only(balances),
    "ReconcileStatus": _doc_only(reconcile_status),
    "Heartbeat": lambda d, op, args: (
        f"node {d['id']} is {d['status']}; heartbeat again within {d['ttl_ms']} ms"
        if d["ttl_ms"]
        else f"node {d['id']} is {d['status']} (liveness is off on this cluster)"
    ),
    "TokenCreated": _doc_only(token_created),
    "TokenList": _doc_only(token_table),
    "TokenRevoked": lambda d, op, args: f"revoked token {d['id']} (at index {d['version']})",
}
