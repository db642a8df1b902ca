"""The REST API under ``/v1``: a thin JSON mapping of the operations onto HTTP.

Every endpoint is derived from an operation's declaration (``univrs.service.operations``: its
route, and which arguments come from the path, the query and the body); ``handle`` turns the
request into the operation's arguments, runs it through ``ApiService.execute`` and renders the
result or the error. The OpenAPI document (``univrs.api.openapi``) is derived from the same
declarations, so it lists exactly what the server routes and accepts.

HTTP specifics:

* ``Idempotency-Key: <client_id>:<seq>`` makes a write exactly-once (client id from
  ``POST /v1/sessions``; ``seq`` counts the session's writes from 1; a retry reuses it).
* ``If-Match: "<version>"`` (or ``expected_version`` in the body or query) makes a write
  conditional: 409 ``version-conflict`` unless the object has that version. Objects come back
  with an ``ETag: "<version>"``.
* Reads take ``?consistency=linearizable`` (default), ``lease`` (with ``[raft] read_lease``
  only; refused otherwise) or ``local``; every read answers with
  ``X-Univrs-Node``, ``X-Univrs-Consistency``, ``X-Univrs-Applied-Index``,
  ``X-Univrs-Commit-Index``, ``X-Univrs-Behind`` (committed entries not yet applied here) and
  ``X-Univrs-Leader-Contact-Ms`` (since this node last heard from the leader).
* Writes answer with ``X-Univrs-Index``: the revision at which the write applied (its log
  index unless batch entries applied: docs/state-machine.md).
* ``Prefer: return=minimal`` (RFC 7240) on a write that answers with its object (the fast
  protocol's ``"answer": "minimal"``, ``protocol.OBJECT_WRITES``) answers ``{"id",
  "version"}`` only, with ``Preference-Applied: return=minimal``; ``return=representation``
  (or no ``Prefer``) is the whole object. Other preferences, and ``Prefer`` on other
  operations, are ignored, as RFC 7240 has it.
* ``Authorization: Bearer <token secret>`` names the caller when auth is on (401 without a
  valid token, 403 without the operation's role: ``univrs.api.auth``).
* A body larger than ``limits.max_body_bytes`` is refused with 413 as soon as the limit is
  passed; JSON nested deeper than ``limits.max_json_depth`` with 400 (``univrs.api.limits``).
* Errors are ``{"error": {"code", "message", "field"?, ...}}`` with the status of
  ``univrs.errors``; 503 and 429 answers carry ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from univrs.api.auth import Authority, Caller, bearer_token
from univrs.api.limits import check_depth, read_body
from univrs.client.protocol import CONSISTENCIES, CONSISTENCY_MESSAGE, OBJECT_WRITES
from univrs.errors import (
    InternalError,
    InvalidArgument,
    MalformedRequest,
    UnivrsError,
    VersionConflict,
    error_to_plain,
    wire_error,
)
from univrs.service.operations import OPERATIONS, Operation, Type, Where

log = logging.getLogger("univrs.api")

MAX_BODY = 1024 * 1024  # limits.max_body_bytes and limits.max_json_depth when no node says
MAX_DEPTH = 32
_KEY_RE = re.compile(r"^([^:\s]+):([0-9]{1,19})$")
_ETAG_RE = re.compile(r'^(?:W/)?"?([0-9]{1,19})"?$')


@attrs.frozen(kw_only=True)
class Endpoint:
    """One REST endpoint: an operation's route and where its arguments come from (derived
    from the operation's declaration by ``endpoint``)."""

    method: str
    path: str
    op: str
    path_arg: str | None = None  # the operation argument the ``{...}`` path segment fills
    body: bool = False  # takes a JSON object body
    query: tuple[str, ...] = ()  # accepted query parameters (reads also take consistency)
    args: dict[str, str] = attrs.field(factory=dict)  # query parameter -> argument name
    ints: tuple[str, ...] = ()  # query parameters that are integers
    maps: tuple[str, ...] = ()  # query parameters that are repeated key=value pairs
    versioned: bool = False  # accepts If-Match / expected_version
    read: bool = False
    keyed: bool = True  # writes accept an Idempotency-Key (not the session endpoints)
    creates: str | None = None  # the collection path of the created object (201 + Location)


def endpoint(op: Operation) -> Endpoint:
    """The REST endpoint of an operation."""
    query = op.located(Where.QUERY)
    path = op.path_param
    return Endpoint(
        method=op.http.method,
        path=op.http.path,
        op=op.name,
        path_arg=None if path is None else path.name,
        body=op.has_body,
        query=tuple(p.query_name for p in query),
        args={p.query_name: p.name for p in query},
        ints=tuple(p.query_name for p in query if p.type is Type.INT),
        maps=tuple(p.query_name for p in query if p.type is Type.STR_MAP),
        versioned=op.http.versioned,
        read=not op.is_write,
        keyed=op.keyed,
        creates=op.http.path if op.http.creates else None,
    )


ENDPOINTS: tuple[Endpoint, ...] = tuple(endpoint(op) for op in OPERATIONS.values())

# ---------------------------------------------------------------- responses


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response; ``ensure_ascii`` so no string (not even a lone surrogate echoed back
    from a request) can fail to encode."""
    body = json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(exc: UnivrsError) -> Response:
    """The JSON answer for an error (a local one is answered as ``internal``: a bug)."""
    exc = wire_error(exc)
    assert exc.http_status is not None
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if exc.http_status in (429, 503) and retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if exc.http_status == 413:
        # The rest of the body is never read, so the connection cannot carry another request:
        # say so, or a client's next request on it races the server's close.
        headers["Connection"] = "close"
    return json_response({"error": error_to_plain(exc)}, exc.http_status, headers)


# ---------------------------------------------------------------- request parsing


def parse_idempotency_key(value: str | None) -> tuple[str, int] | None:
    """``<client_id>:<seq>`` -> (client_id, seq); MalformedRequest for any other form."""
    if value is None:
        return None
    m = _KEY_RE.match(value.strip())
    if m is None or int(m.group(2)) < 1:
        raise MalformedRequest(
            "Idempotency-Key must be '<client_id>:<seq>' with seq >= 1: open a session with "
            "POST /v1/sessions and number its writes 1, 2, 3 ... (reuse a number to retry)",
            field="Idempotency-Key",
        )
    return m.group(1), int(m.group(2))


def parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    m = _ETAG_RE.match(value.strip())
    if m is None:
        raise MalformedRequest('If-Match must be an object version such as "12"', field="If-Match")
    return int(m.group(1))


def _query_args(ep: Endpoint, request: Request) -> tuple[dict[str, Any], str | None]:
    args: dict[str, Any] = {}
    consistency: str | None = None
    maps: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    for name, value in request.query_params.multi_items():
        if name == "consistency" and ep.read:
            if value not in CONSISTENCIES:
                raise InvalidArgument(CONSISTENCY_MESSAGE, field="consistency")
            consistency = value
            continue
        if name not in ep.query:
            allowed = ", ".join((*ep.query, *(("consistency",) if ep.read else ()))) or "none"
            raise InvalidArgument(
                f"unknown query parameter {name!r} (accepted: {allowed})", field=name
            )
        if name in ep.maps:
            key, sep, text = value.partition("=")
            if not sep or not key:
                raise InvalidArgument(f"{name} must be 'key=value'", field=name)
            maps.setdefault(ep.args[name], {})[key] = text
            continue
        if name in seen:
            raise InvalidArgument(f"query parameter {name!r} given twice", field=name)
        seen.add(name)
        if name in ep.ints:
            if not re.fullmatch(r"-?[0-9]{1,19}", value):
                raise InvalidArgument(f"{name} must be an integer", field=name)
            args[ep.args[name]] = int(value)
        else:
            args[ep.args[name]] = value
    args.update(maps)
    return args, consistency


def _limits(request: Request) -> tuple[int, int]:
    """(max body bytes, max JSON depth) of the node serving ``request``."""
    node = getattr(request.app.state, "node", None)
    config = getattr(node, "config", None)
    return (
        getattr(config, "max_body_bytes", MAX_BODY),
        getattr(config, "max_json_depth", MAX_DEPTH),
    )


NO_BODY: Any = object()
"""What ``json_body`` answers for an empty body (JSON ``null`` is a body: None)."""


async def json_body(request: Request) -> Any:
    """The request's JSON body (``NO_BODY`` if empty), read with the node's limits: 413 past
    ``max_body_bytes`` (the rest is not read), 400 past ``max_json_depth`` or for bad JSON."""
    max_bytes, max_depth = _limits(request)
    raw = await read_body(request.stream(), max_bytes)
    request._body = raw  # Starlette's cache: request.body() (forwarding) answers from it
    if not raw.strip():
        return NO_BODY
    check_depth(raw, max_depth)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"the request body is not valid JSON: {exc}") from None


def authority_of(request: Request) -> Authority:
    """The node's one ``Authority`` (``build_app``): every endpoint checks callers with it, so
    the bounds on catching up for unknown tokens hold per node (univrs/api/auth.py)."""
    authority: Authority = request.app.state.authority
    return authority


def caller_of(request: Request) -> Caller:
    """Who sends ``request``: its bearer token and the client's address."""
    client = request.client
    return Caller(
        token=bearer_token(request.headers.get("authorization")),
        address=None if client is None else client.host,
    )


async def _body(request: Request) -> dict[str, Any]:
    doc = await json_body(request)
    if doc is NO_BODY:
        return {}
    if type(doc) is not dict:
        raise InvalidArgument("the request body must be a JSON object")
    return doc


async def request_args(
    ep: Endpoint, request: Request
) -> tuple[dict[str, Any], tuple[str, int] | None, str | None]:
    """(operation arguments, idempotency key, consistency) of one HTTP request."""
    args, consistency = _query_args(ep, request)
    if ep.body:
        body = await _body(request)
        for name in body:
            if name in args or name == ep.path_arg:
                where = "the URL path" if name == ep.path_arg else "the query"
                raise InvalidArgument(
                    f"field {name!r} is given by {where}, not the body", field=name
                )
        args.update(body)
    if ep.path_arg is not None:
        args[ep.path_arg] = request.path_params[ep.path_arg]
    if ep.versioned:
        expected = parse_if_match(request.headers.get("if-match"))
        if expected is not None:
            given = args.get("expected_version")
            if given is not None and given != expected:
                # No object version can equal both: the precondition fails, as a conflict.
                raise VersionConflict(
                    f"If-Match ({expected}) and expected_version ({given!r}) disagree: no "
                    "version can match both",
                    field="expected_version",
                )
            args["expected_version"] = expected
    raw_key = request.headers.get("idempotency-key")
    if raw_key is not None and not ep.keyed:
        raise MalformedRequest(f"{ep.op} takes no Idempotency-Key", field="Idempotency-Key")
    key = None if ep.read else parse_idempotency_key(raw_key)
    return args, key, consistency


# ---------------------------------------------------------------- the handler


def _meta_headers(meta: dict[str, Any] | None) -> dict[str, str]:
    if not meta:
        return {}
    if "index" in meta:  # a write: the log index it was applied at
        return {"X-Univrs-Index": str(meta["index"])}
    return {
        "X-Univrs-Node": str(meta["node"]),
        "X-Univrs-Consistency": str(meta["consistency"]),
        "X-Univrs-Applied-Index": str(meta["applied_index"]),
        "X-Univrs-Commit-Index": str(meta["commit_index"]),
        "X-Univrs-Behind": str(meta["behind"]),
        "X-Univrs-Leader-Contact-Ms": "unknown"
        if meta.get("leader_contact_ms") is None
        else str(meta["leader_contact_ms"]),
    }


def _preferred_answer(ep: Endpoint, prefer: str | None) -> str | None:
    """ "minimal" when ``Prefer`` asks ``return=minimal`` of an ``OBJECT_WRITES`` write (the
    last ``return`` preference counts), else None (the whole object)."""
    if prefer is None or ep.op not in OBJECT_WRITES:
        return None
    answer = None
    for item in prefer.split(","):
        name, _, value = item.split(";", 1)[0].partition("=")
        if name.strip().lower() == "return":
            value = value.strip().strip('"').lower()
            answer = "minimal" if value == "minimal" else None
    return answer


async def handle(ep: Endpoint, request: Request) -> Response:
    """Run one REST request (see the module docstring)."""
    try:
        caller = caller_of(request)
        args, key, consistency = await request_args(ep, request)
        service = request.app.state.service
        answer = _preferred_answer(ep, request.headers.get("prefer"))
        result, meta = await service.execute(
            ep.op, args, key=key, consistency=consistency, caller=caller, answer=answer
        )
    except Exception as exc:
        if isinstance(exc, UnivrsError) and exc.on_wire():
            return error_response(exc)
        log.exception("%s %s failed with a bug", ep.method, ep.path)
        return error_response(InternalError(f"{type(exc).__name__} in {ep.op}"))
    headers = _meta_headers(meta)
    if answer is not None:
        headers["Preference-Applied"] = "return=minimal"
    status = 200
    if isinstance(result, dict) and isinstance(result.get("version"), int) and "id" in result:
        headers["ETag"] = f'"{result["version"]}"'
    if ep.creates is not None:
        status = 201
        if isinstance(result, dict):
            ident = result.get("id", result.get("client_id"))
            if isinstance(ident, str):
                headers["Location"] = f"{ep.creates}/{ident}"
    return json_response(result, status, headers)


def _endpoint_handler(ep: Endpoint) -> Any:
    async def endpoint(request: Request) -> Response:
        return await handle(ep, request)

    endpoint.__name__ = ep.op.replace(".", "_")
    return endpoint


def routes() -> list[Route]:
    """Starlette routes for every endpoint (one route per path, dispatching on method)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.path, {})[ep.method] = ep
    out = []
    for path, methods in by_path.items():
        handlers = {method: _endpoint_handler(ep) for method, ep in methods.items()}

        async def dispatch(request: Request, handlers: dict[str, Any] = handlers) -> Response:
            handler = handlers.get(request.method) or handlers["GET"]  # HEAD -> GET
            response: Response = await handler(request)
            return response

        out.append(Route(path, dispatch, methods=list(methods)))
    return out
