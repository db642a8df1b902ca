"""The OpenAPI 3.1 document of the REST API, generated from ``univrs.api.rest.ENDPOINTS``.

Schemas mirror what the server checks (``univrs.api.convert`` and the state machine's
validators): exact types, no unknown fields, the same id, name and key patterns and the same
limits. A few rules cannot be said in JSON Schema (no duplicate ports, a node's status
transitions, existence of referenced objects); breaking them gets a 422, 404 or 409, all of
which every operation documents. A schemathesis run in the tests checks the document against
the server.
"""

from __future__ import annotations

from typing import Any

from univrs import __version__
from univrs.api.convert import INSTANCE_STATUSES, NODE_STATUSES, PORT_PROTOCOLS
from univrs.api.ops import MAX_LIMIT
from univrs.api.rest import ENDPOINTS, Endpoint
from univrs.errors import WIRE_CODES
from univrs.sm.credits import MAX_REASON_LEN
from univrs.sm.validate import (
    MAX_ADDRESSES,
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

# Patterns of univrs.sm.validate, anchored for JSON Schema (which searches, not matches).
# Whitespace is spelled out as the characters Python's str.isspace() (which the validators
# use) calls whitespace, since regex dialects disagree on \s.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(
    props: dict[str, Any], required: tuple[str, ...] = (), *, closed: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


SCHEMAS: dict[str, Any] = {
    "Resources": _obj({"cpu_millis": QUANTITY, "memory_bytes": QUANTITY}),
    "Port": _obj(
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
    "WorkloadSpec": _obj(
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
            "resources": _ref("Resources"),
            "ports": {"type": "array", "items": _ref("Port"), "maxItems": MAX_PORTS},
        },
        ("name", "image"),
    ),
    "WorkloadStatus": _obj(
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
    "Workload": _obj(
        {
            "id": {"type": "string"},
            "version": {"type": "integer"},
            "created_index": {"type": "integer"},
            "spec": _ref("WorkloadSpec"),
            "status": _ref("WorkloadStatus"),
        },
        ("id", "version", "created_index", "spec", "status"),
        closed=False,
    ),
    "Instance": _obj(
        {
            "id": {"type": "string"},
            "workload_id": {"type": "string"},
            "node_id": _nullable({"type": "string"}),
            "status": {"type": "string", "enum": list(INSTANCE_STATUSES)},
            "message": {"type": "string"},
            "version": {"type": "integer"},
            "created_index": {"type": "integer"},
        },
        ("id", "workload_id", "node_id", "status", "message", "version", "created_index"),
        closed=False,
    ),
    "Node": _obj(
        {
            "id": {"type": "string"},
            "addresses": {"type": "array", "items": {"type": "string"}},
            "capacity": _ref("Resources"),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "status": {"type": "string", "enum": list(NODE_STATUSES)},
            "version": {"type": "integer"},
            "created_index": {"type": "integer"},
        },
        ("id", "addresses", "capacity", "labels", "status", "version", "created_index"),
        closed=False,
    ),
    "Deleted": _obj(
        {"id": {"type": "string"}, "deleted": {"type": "boolean"}, "version": {"type": "integer"}},
        ("id", "deleted", "version"),
        closed=False,
    ),
    "Balance": _obj(
        {"peer": {"type": "string"}, "balance": {"type": "integer", "minimum": 0}},
        ("peer", "balance"),
        closed=False,
    ),
    "Minted": _obj(
        {
            "peer": {"type": "string"},
            "balance": {"type": "integer"},
            "version": {"type": "integer"},
        },
        ("peer", "balance", "version"),
        closed=False,
    ),
    "Transferred": _obj(
        {
            "from": _ref("Balance"),
            "to": _ref("Balance"),
            "amount": {"type": "integer"},
            "version": {"type": "integer"},
        },
        ("from", "to", "amount", "version"),
        closed=False,
    ),
    "Session": _obj(
        {"client_id": {"type": "string"}, "version": {"type": "integer"}},
        ("client_id", "version"),
        closed=False,
    ),
    "SessionClosed": _obj(
        {"client_id": {"type": "string"}, "closed": {"type": "boolean"}},
        ("client_id", "closed"),
        closed=False,
    ),
    "Error": _obj(
        {
            "error": _obj(
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


def _page(item: str) -> dict[str, Any]:
    return _obj(
        {"items": {"type": "array", "items": _ref(item)}, "next": _nullable({"type": "string"})},
        ("items", "next"),
        closed=False,
    )


SCHEMAS["WorkloadList"] = _page("Workload")
SCHEMAS["InstanceList"] = _page("Instance")
SCHEMAS["NodeList"] = _page("Node")
SCHEMAS["BalanceList"] = {
    **_page("Balance"),
    "properties": {**_page("Balance")["properties"], "total_supply": {"type": "integer"}},
}

# Request bodies, by operation (the path argument is not part of the body).
BODIES: dict[str, dict[str, Any]] = {
    "workload.create": _obj({"id": ID, "spec": _ref("WorkloadSpec")}, ("spec",)),
    "workload.update": _obj({"spec": _ref("WorkloadSpec"), "expected_version": VERSION}, ("spec",)),
    "workload.scale": _obj(
        {
            "replicas": {"type": "integer", "minimum": 0, "maximum": MAX_REPLICAS},
            "expected_version": VERSION,
        },
        ("replicas",),
    ),
    "instance.create": _obj({"id": ID, "workload_id": ID, "node_id": ID}, ("workload_id",)),
    "instance.update_status": _obj(
        {
            "status": {"type": "string", "enum": list(INSTANCE_STATUSES)},
            "message": TEXT,
            "node_id": ID,
            "expected_version": VERSION,
        },
        ("status",),
    ),
    "node.register": _obj(
        {
            "id": ID,
            "addresses": {
                "type": "array",
                "maxItems": MAX_ADDRESSES,
                "items": {**ASCII_TOKEN, "maxLength": MAX_TEXT_LEN},
            },
            "capacity": _ref("Resources"),
            "labels": LABELS,
            "status": {"type": "string", "enum": list(NODE_STATUSES), "default": "ready"},
        },
        ("id",),
    ),
    "node.update_status": _obj(
        {"status": {"type": "string", "enum": list(NODE_STATUSES)}, "expected_version": VERSION},
        ("status",),
    ),
    "credits.mint": _obj(
        {
            "to_peer": ID,
            "amount": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY},
            "reason": {
                "type": "string",
                "pattern": rf"^[^\u0000]*[^{_SPACE}\u0000][^\u0000]*$",
                "maxLength": MAX_REASON_LEN,
            },
        },
        ("to_peer", "amount", "reason"),
    ),
    "credits.transfer": _obj(
        {
            "from_peer": ID,
            "to_peer": ID,
            "amount": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY},
        },
        ("from_peer", "to_peer", "amount"),
    ),
    "session.open": _obj({}),
}

RESULTS: dict[str, str] = {
    "workload.create": "Workload",
    "workload.list": "WorkloadList",
    "workload.get": "Workload",
    "workload.update": "Workload",
    "workload.scale": "Workload",
    "workload.delete": "Deleted",
    "instance.create": "Instance",
    "instance.list": "InstanceList",
    "instance.get": "Instance",
    "instance.update_status": "Instance",
    "instance.delete": "Deleted",
    "node.register": "Node",
    "node.list": "NodeList",
    "node.get": "Node",
    "node.update_status": "Node",
    "node.deregister": "Deleted",
    "credits.mint": "Minted",
    "credits.transfer": "Transferred",
    "credits.list": "BalanceList",
    "credits.balance": "Balance",
    "session.open": "Session",
    "session.close": "SessionClosed",
}

_QUERY: dict[str, dict[str, Any]] = {
    "label": {
        "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}},
        "style": "form",
        "explode": True,
        "description": "key=value; repeat for several labels (all must match)",
    },
    "name": {"schema": {"type": "string"}, "description": "exact workload name"},
    "limit": {
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
        "description": "page size",
    },
    "after": {"schema": {"type": "string"}, "description": "the 'next' of the previous page"},
    "workload_id": {"schema": {"type": "string"}},
    "node_id": {"schema": {"type": "string"}},
    "expected_version": {"schema": VERSION, "description": "same as If-Match"},
}
_STATUS_QUERY = {
    "instance.list": {"schema": {"type": "string", "enum": list(INSTANCE_STATUSES)}},
    "node.list": {"schema": {"type": "string", "enum": list(NODE_STATUSES)}},
}

_ERRORS = {
    "400": "Malformed request (body is not JSON, bad header syntax)",
    "404": "The object does not exist",
    "409": "Conflict: already exists, version conflict, insufficient credits, session",
    "422": "Invalid argument (the error names the field)",
    "503": "No leader or no quorum (with Retry-After); or the deadline passed or the node "
    "cannot tell whether the write applied (timeout, outcome-unknown)",
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _operation(ep: Endpoint) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    if ep.path_arg is not None:
        params.append(
            {"name": ep.path_arg, "in": "path", "required": True, "schema": {"type": "string"}}
        )
    for name in ep.query:
        spec = _STATUS_QUERY.get(ep.op, {}) if name == "status" else _QUERY[name]
        params.append({"name": name, "in": "query", "required": False, **spec})
    if ep.read:
        params.append(
            {
                "name": "consistency",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "string",
                    "enum": ["linearizable", "local"],
                    "default": "linearizable",
                },
            }
        )
    if ep.versioned:
        params.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": r'^"[0-9]{1,18}"$'},
                "description": 'the expected object version, e.g. "12"',
            }
        )
    if not ep.read and ep.keyed:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": r"^c[1-9][0-9]{0,17}:[1-9][0-9]{0,17}$"},
                "description": "<client_id>:<seq> of a session opened with POST /v1/sessions",
            }
        )
    ok = "201" if ep.creates else "200"
    responses: dict[str, Any] = {
        ok: {
            "description": "OK",
            "content": {"application/json": {"schema": _ref(RESULTS[ep.op])}},
        }
    }
    for status, text in _ERRORS.items():
        responses[status] = _error(text)
    op: dict[str, Any] = {
        "operationId": ep.op.replace(".", "_"),
        "summary": ep.summary,
        "parameters": params,
        "responses": responses,
    }
    if ep.body:
        op["requestBody"] = {
            "required": ep.op != "session.open",
            "content": {"application/json": {"schema": BODIES[ep.op]}},
        }
    return op


def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI document (served at ``/openapi.json``)."""
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "univrs cluster state API",
            "version": __version__,
            "description": "See docs/api.md. Writes sent to any node are forwarded to the "
            "leader; reads take ?consistency=linearizable|local.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
