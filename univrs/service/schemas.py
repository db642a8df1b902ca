"""JSON Schemas of the client surface's documents and argument values (OpenAPI 3.1 dialect).

They mirror what the server checks (``univrs.api.convert`` and the state machine's validators):
exact types, no unknown fields, the same id, name and key patterns and the same limits. A few
rules cannot be said in JSON Schema (no duplicate ports, a node's status transitions, existence
of referenced objects); breaking them gets a 422, 404 or 409. The operations
(``univrs.service.operations``) give each argument one of these schemas, and ``SCHEMAS`` are the
documents they answer; ``univrs.api.openapi`` assembles the OpenAPI document from both.
"""

from __future__ import annotations

from typing import Any

from univrs.errors import WIRE_CODES
from univrs.sm.model import InstanceStatus, NodeStatus, PortProtocol
from univrs.sm.validate import (
    MAX_ARGS,
    MAX_ENV,
    MAX_ID_LEN,
    MAX_IMAGE_LEN,
    MAX_LABEL_VALUE_LEN,
    MAX_LABELS,
    MAX_NAME_LEN,
    MAX_PORTS,
    MAX_QUANTITY,
    MAX_REPLICAS,
    MAX_TEXT_LEN,
    MAX_VERSION,
)

INSTANCE_STATUSES = tuple(s.value for s in InstanceStatus)
NODE_STATUSES = tuple(s.value for s in NodeStatus)
PORT_PROTOCOLS = tuple(p.value for p in PortProtocol)
DEFAULT_LIMIT = 100  # a page's size unless the request says
MAX_LIMIT = 1000
DEFAULT_EVENTS = 1000  # events per watch answer unless the request says
MAX_EVENTS = 10_000
MAX_WAIT_MS = 60_000  # the longest a watch poll waits for an event
MAX_REVISION = MAX_VERSION

# Patterns of univrs.sm.validate, anchored for JSON Schema (which searches, not matches).
# Whitespace is spelled out as the characters Python's str.isspace() (which the validators
# use) calls whitespace, since regex dialects disagree on \s.
SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
ASCII_TOKEN = {"type": "string", "pattern": r"^[!-~]+$", "minLength": 1}
ID = {
    "type": "string",
    "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]*$",
    "minLength": 1,
    "maxLength": MAX_ID_LEN,
}
TEXT = {"type": "string", "pattern": r"^[^\u0000]*$", "maxLength": MAX_TEXT_LEN}
QUANTITY = {"type": "integer", "minimum": 0, "maximum": MAX_QUANTITY}
VERSION = {"type": "integer", "minimum": 0, "maximum": MAX_VERSION}
LABELS = {
    "type": "object",
    "maxProperties": MAX_LABELS,
    "propertyNames": {
        "pattern": r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$",
        "maxLength": 253,
    },
    "additionalProperties": {
        "type": "string",
        "pattern": r"^[^\u0000]*$",
        "maxLength": MAX_LABEL_VALUE_LEN,
    },
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    props: dict[str, Any], required: tuple[str, ...] = (), *, closed: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


SCHEMAS: dict[str, Any] = {
    "Resources": obj({"cpu_millis": QUANTITY, "memory_bytes": QUANTITY}),
    "Port": obj(
        {
            "container_port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "protocol": {"type": "string", "enum": list(PORT_PROTOCOLS), "default": "tcp"},
            "name": {
                "type": "string",
                "pattern": r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?)?$",
                "maxLength": 15,
            },
        },
        ("container_port",),
    ),
    "WorkloadSpec": obj(
        {
            "name": {
                "type": "string",
                "pattern": r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$",
                "minLength": 1,
                "maxLength": MAX_NAME_LEN,
            },
            "image": {**ASCII_TOKEN, "maxLength": MAX_IMAGE_LEN},
            "replicas": {"type": "integer", "minimum": 0, "maximum": MAX_REPLICAS, "default": 1},
            "args": {"type": "array", "items": TEXT, "maxItems": MAX_ARGS},
            "env": {
                "type": "object",
                "maxProperties": MAX_ENV,
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*$", "maxLength": 256},
                "additionalProperties": TEXT,
            },
            "labels": LABELS,
            "resources": ref("Resources"),
            "ports": {"type": "array", "items": ref("Port"), "maxItems": MAX_PORTS},
        },
        ("name", "image"),
    ),
    "WorkloadStatus": obj(
        {
            "phase": {"type": "string", "enum": ["ready", "progressing", "degraded"]},
            **{
                k: {"type": "integer", "minimum": 0}
                for k in ("desired", "pending", "running", "succeeded", "failed", "unknown")
            },
        },
        ("phase", "desired", "pending", "running", "succeeded", "failed", "unknown"),
        closed=False,
    ),
    "Workload": obj(
        {
            "id": {"type": "string"},
            "version": {"type": "integer"},
            "created_index": {"type": "integer"},
            "spec": ref("WorkloadSpec"),
            "status": ref("WorkloadStatus"),
        },
        ("id", "version", "created_index", "spec", "status"),
        closed=False,
    ),
    "Instance": obj(
        {
            "id": {"type": "string"},
            "workload_id": {"type": "string"},
            "node_id": nullable({"type": "string"}),
            "status": {"type": "string", "enum": list(INSTANCE_STATUSES)},
            "message": {"type": "string"},
            "version": {"type": "integer"},
            "created_index": {"type": "integer"},
        },
        ("id", "workload_id", "node_id", "status", "message", "version", "created_index"),
        closed=False,
    ),
    "Node": obj(
        {
            "id": {"type": "string"},
            "addresses": {"type": "array", "items": {"type": "string"}},
            "capacity": ref("Resources"),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "status": {"type": "string", "enum": list(NODE_STATUSES)},
            "version": {"type": "integer"},
            "created_index": {"type": "integer"},
        },
        ("id", "addresses", "capacity", "labels", "status", "version", "created_index"),
        closed=False,
    ),
    "Deleted": obj(
        {"id": {"type": "string"}, "deleted": {"type": "boolean"}, "version": {"type": "integer"}},
        ("id", "deleted", "version"),
        closed=False,
    ),
    # A write that applied, answered after a later command (a concurrent delete, in the same
    # batch or applied before the answer was rendered) removed its object: what the write did
    # (``univrs.api.opargs.gone``). A heartbeat's answer adds ``ttl_ms``.
    # A write's minimal answer (``Prefer: return=minimal``, the fast protocol's ``"answer":
    # "minimal"``): the object's id and the version this write gave it.
    "Written": obj({"id": {"type": "string"}, "version": {"type": "integer"}}, ("id", "version")),
    "WrittenThenDeleted": obj(
        {"id": {"type": "string"}, "version": {"type": "integer"}, "deleted": {"const": True}},
        ("id", "version", "deleted"),
        closed=False,
    ),
    "Balance": obj(
        {"peer": {"type": "string"}, "balance": {"type": "integer", "minimum": 0}},
        ("peer", "balance"),
        closed=False,
    ),
    "Minted": obj(
        {
            "peer": {"type": "string"},
            "balance": {"type": "integer"},
            "version": {"type": "integer"},
        },
        ("peer", "balance", "version"),
        closed=False,
    ),
    "Transferred": obj(
        {
            "from": ref("Balance"),
            "to": ref("Balance"),
            "amount": {"type": "integer"},
            "version": {"type": "integer"},
        },
        ("from", "to", "amount", "version"),
        closed=False,
    ),
    "Session": obj(
        {"client_id": {"type": "string"}, "version": {"type": "integer"}},
        ("client_id", "version"),
        closed=False,
    ),
    "SessionClosed": obj(
        {"client_id": {"type": "string"}, "closed": {"type": "boolean"}},
        ("client_id", "closed"),
        closed=False,
    ),
    "Token": obj(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "roles": {"type": "array", "items": {"type": "string"}},
            "created_index": {"type": "integer"},
            "created_ms": {"type": "integer"},
        },
        ("id", "name", "roles", "created_index", "created_ms"),
        closed=False,
    ),
    "TokenCreated": obj(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "roles": {"type": "array", "items": {"type": "string"}},
            "secret": {"type": "string"},
            "version": {"type": "integer"},
        },
        ("id", "name", "roles", "secret", "version"),
        closed=False,
    ),
    "TokenRevoked": obj(
        {"id": {"type": "string"}, "revoked": {"type": "boolean"}, "version": {"type": "integer"}},
        ("id", "revoked", "version"),
        closed=False,
    ),
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {"type": "string", "enum": list(WIRE_CODES)},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                    "current_version": {"type": "integer"},
                    "retry_after": {"type": "number"},
                    "leader": {"type": "string"},
                },
                ("code", "message"),
                closed=False,
            )
        },
        ("error",),
        closed=False,
    ),
}


GONE_RESULTS = frozenset({"Workload", "Instance", "Node", "Heartbeat"})
"""Results of writes answered ``WrittenThenDeleted`` when their object is gone by the time
the answer is rendered (their operations document both: ``univrs.api.openapi``)."""


def _page(item: str) -> dict[str, Any]:
    return obj(
        {
            "items": {"type": "array", "items": ref(item)},
            "next": nullable({"type": "string"}),
            # The revision (applied log index) the list was read at: watch from it + 1.
            "revision": {"type": "integer", "minimum": 0},
        },
        ("items", "next", "revision"),
        closed=False,
    )


SCHEMAS["WorkloadList"] = _page("Workload")
SCHEMAS["InstanceList"] = _page("Instance")
SCHEMAS["NodeList"] = _page("Node")
SCHEMAS["Heartbeat"] = obj(
    {
        "id": {"type": "string"},
        "status": {"type": "string", "enum": list(NODE_STATUSES)},
        "version": {"type": "integer"},
        "ttl_ms": {"type": "integer", "minimum": 0},
    },
    ("id", "status", "version", "ttl_ms"),
    closed=False,
)
_COUNT = {"type": "integer", "minimum": 0}
SCHEMAS["WorkloadReconcile"] = obj(
    {
        "workload": {"type": "string"},
        "desired": _COUNT,
        "live": _COUNT,
        "to_place": _COUNT,
        "to_remove": _COUNT,
        "lost": _COUNT,
        "pending": _COUNT,
        "reason": {"type": "string"},
    },
    ("workload", "desired", "live", "to_place", "to_remove", "lost", "pending", "reason"),
)
SCHEMAS["ReconcileStatus"] = obj(
    {
        "revision": {"type": "integer", "minimum": 0},
        "converged": {"type": "boolean"},
        "to_place": _COUNT,
        "to_remove": _COUNT,
        "pending": _COUNT,
        "workloads": {"type": "array", "items": ref("WorkloadReconcile")},
    },
    ("revision", "converged", "to_place", "to_remove", "pending", "workloads"),
)
_OBJECT = {"oneOf": [ref("Workload"), ref("Instance"), ref("Node"), {"type": "null"}]}
SCHEMAS["Event"] = obj(
    {
        "revision": {"type": "integer", "minimum": 1},
        "type": {"type": "string", "enum": ["put", "delete"]},
        "kind": {"type": "string", "enum": ["workload", "instance", "node"]},
        "id": {"type": "string"},
        "object": _OBJECT,
        "prev": _OBJECT,
    },
    ("revision", "type", "kind", "id", "object", "prev"),
    closed=False,
)
SCHEMAS["EventBatch"] = obj(
    {
        "events": {"type": "array", "items": ref("Event")},
        # Every revision up to this one is covered: the next poll starts at revision + 1.
        "revision": {"type": "integer", "minimum": 0},
        "compacted_revision": {"type": "integer", "minimum": 0},
        "node": {"type": "string"},
    },
    ("events", "revision", "compacted_revision", "node"),
    closed=False,
)
SCHEMAS["TokenList"] = _page("Token")
SCHEMAS["BalanceList"] = {
    **_page("Balance"),
    "properties": {**_page("Balance")["properties"], "total_supply": {"type": "integer"}},
}
