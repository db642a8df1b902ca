"""The OpenAPI 3.1 document of the REST API, derived from the operations table.

Every operation of ``univrs.service.operations`` with its REST route becomes one OpenAPI
operation: its path, query and header parameters, its request body (the operation's BODY
arguments, no others), its result and the errors every operation may answer. The schemas are
``univrs.service.schemas``: they mirror what the server checks. A schemathesis run in the tests
checks the document against the server.
"""

from __future__ import annotations

from typing import Any

from univrs import __version__
from univrs.client.protocol import OBJECT_WRITES
from univrs.service.operations import ANY_TOKEN, OPERATIONS, PUBLIC, Operation, Param, Type, Where
from univrs.service.schemas import GONE_RESULTS, SCHEMAS, obj, ref

_ERRORS = {
    "400": "Malformed request (body is not JSON, nested too deep, bad header syntax)",
    "401": "Auth is on and the request has no valid token (Authorization: Bearer)",
    "403": "The token lacks the operation's role",
    "404": "The object does not exist",
    "409": "Conflict: already exists, version conflict, insufficient credits, session",
    "413": "The request body is larger than the node accepts",
    "422": "Invalid argument (the error names the field)",
    "429": "Rate limited (session opening per token or address), with Retry-After",
    "503": "No leader or no quorum (with Retry-After); or the deadline passed or the node "
    "cannot tell whether the write applied (timeout, outcome-unknown)",
    "507": "The storage quota is exceeded (NOSPACE alarm): writes other than deletes refused",
}


def _role_text(role: str) -> str:
    if role == PUBLIC:
        return "Needs no token."
    if role == ANY_TOKEN:
        return "Needs a valid token (any role)."
    return f"Needs the role `{role}`."


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ref("Error")}},
    }


def _query(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.query_name, "in": "query", "required": False}
    out["schema"] = p.schema
    if p.type is Type.STR_MAP:  # repeated key=value
        out.update(style="form", explode=True)
    if p.description is not None:
        out["description"] = p.description
    return out


def request_body(op: Operation) -> dict[str, Any]:
    """The JSON Schema of an operation's REST body: its BODY arguments, nothing else."""
    body = op.located(Where.BODY)
    return obj({p.name: p.schema for p in body}, tuple(p.name for p in body if p.required))


def result_schema(op: Operation) -> dict[str, Any]:
    """The JSON Schema of an operation's successful answer. A write of an object may be
    answered ``WrittenThenDeleted`` (it applied, and a later command of its batch deleted the
    object: docs/api.md, "Write outcomes"), so its result is one of the two."""
    if op.name in OBJECT_WRITES:  # ``Prefer: return=minimal``: ``Written``
        return {"oneOf": [ref(op.result), ref("WrittenThenDeleted"), ref("Written")]}
    if op.is_write and op.result in GONE_RESULTS:
        return {"oneOf": [ref(op.result), ref("WrittenThenDeleted")]}
    return ref(op.result)


def _operation(op: Operation) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    path = op.path_param
    if path is not None:
        params.append({"name": path.name, "in": "path", "required": True, "schema": path.schema})
    params.extend(_query(p) for p in op.located(Where.QUERY))
    if not op.is_write:
        params.append(
            {
                "name": "consistency",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "string",
                    "enum": ["linearizable", "lease", "local"],
                    "default": "linearizable",
                },
            }
        )
    if op.http.versioned:
        params.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": r'^"[0-9]{1,18}"$'},
                "description": 'the expected object version, e.g. "12"',
            }
        )
    if op.name in OBJECT_WRITES:
        params.append(
            {
                "name": "Prefer",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "return=minimal: answer only the object's id and the version "
                "this write gave it (Written; Preference-Applied: return=minimal)",
            }
        )
    if op.keyed:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": r"^c[1-9][0-9]{0,17}:[1-9][0-9]{0,17}$"},
                "description": "<client_id>:<seq> of a session opened with POST /v1/sessions",
            }
        )
    ok = "201" if op.http.creates else "200"
    responses: dict[str, Any] = {
        ok: {
            "description": "OK",
            "content": {"application/json": {"schema": result_schema(op)}},
        }
    }
    for status, text in _ERRORS.items():
        responses[status] = _error(text)
    if op.result == "EventBatch":
        responses["410"] = _error(
            "Compacted: the revision is no longer kept here; list again and watch from the "
            "list's revision + 1 (current_revision says where this node is)"
        )
    role = op.required_role
    doc: dict[str, Any] = {
        "operationId": op.name.replace(".", "_"),
        "summary": op.summary,
        "description": _role_text(role),
        "parameters": params,
        "responses": responses,
        # With auth on: a bearer token (the role in the description); none for PUBLIC.
        "security": [{}] if role == PUBLIC else [{"bearer": []}, {}],
    }
    if op.has_body:
        doc["requestBody"] = {
            "required": any(p.required for p in op.located(Where.BODY)),
            "content": {"application/json": {"schema": request_body(op)}},
        }
    return doc


def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI document (served at ``/openapi.json``)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS.values():
        paths.setdefault(op.http.path, {})[op.http.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "univrs cluster state API",
            "version": __version__,
            "description": "See docs/api.md. Writes sent to any node are forwarded to the "
            "leader; reads take ?consistency=linearizable|lease|local (lease: with [raft] "
            "read_lease only).",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token's secret, when the node has [auth] enabled "
                    "(docs/security.md)",
                }
            },
        },
    }
