"""The fast client protocol: CBOR frames over a websocket at ``/client`` on a node's raft port.

Theory of operation. HTTP in Python costs about a millisecond of server CPU per request; this
protocol carries the same operations (``univrs.service.operations``: ``workload.create``,
``credits.mint`` ...) with the same arguments, results and errors as the REST API, but many
requests travel in one websocket message and many are in flight on one connection, matched by
request id.

Frames (each one CBOR item, decoded strictly by ``univrs.codec.decode_plain``)::

    client hello  {"univrs": "client", "v": 1, "token": str?}  # the connection's token
    server hello  {"univrs": "client", "v": 1, "node": id, "leader": id | None,
                   "members": {id: {"client": "host:port" | None, "api": "host:port" | None}},
                   "answers": ["full", "minimal"]}        # the answer modes it takes (s18)
                  or {"univrs": "client", "v": 1, "error": <error>} and a close
    requests      [{"id": uint, "op": str, "args": map,
                    "key": [client_id, seq]?,              # idempotency (a session key)
                    "consistency": "linearizable"|"lease"|"local"?, # reads; default linearizable
                    "timeout_ms": uint?,                   # the request's deadline
                    "hops": uint?,                         # 1 when a node forwards to the leader
                    "token": str?,                         # overrides the hello's token
                    "client": str?,                        # forwarded: the client's address
                    "answer": "full"|"minimal"?}, ...]     # writes; default full (below)
    responses     {"leader": id | None, "r": [{"id": uint, "ok": result, "meta": map?}
                                              | {"id": uint, "error": <error>}, ...]}
    <error>       {"code": str, "message": str, "field": str?, ...}  (univrs.errors)

A token (``univrs.api.auth``) may be given once in the hello, for every request of the
connection, or per request (a node forwarding requests of many callers to its leader sends each
caller's own token). The token is checked per request: one without a valid token gets
``unauthenticated``, one whose token lacks the role ``permission-denied``. ``client`` is
honoured only on a forwarded request (``hops`` >= 1).

Minimal answers (s18-answers). A write may ask for ``"answer": "minimal"``: a write that
answers with its object (``workload.create|update|scale``, ``instance.create|update_status``,
``node.register|update_status``: ``OBJECT_WRITES``) then answers ``{"id", "version"}``, the
object's id and the version this write gave it (its committed revision, the same as
``meta.index``), with no document rendered, encoded or decoded; every other write's answer is
already small and stays as it is; errors are unchanged. ``"full"`` (or no field) is the whole
document, as before. Extending the protocol without breaking older peers: a node of older code
answers an unknown request field with ``malformed-request``, so a client sends ``answer`` only
to a node whose hello lists ``"minimal"`` in ``answers`` (older hellos have no such key; older
clients ignore it); to an older node it sends the request as before and reduces the full
answer itself (``minimal_of``: exact, since ``meta.index`` is the write's version). A value
other than ``"full"``/``"minimal"`` is ``malformed-request`` and ``"minimal"`` on a read
``invalid-argument``, both with ``field: "answer"``.

Responses come back in completion order, not request order. A request the server cannot even
parse (no usable id) closes the connection with a protocol error; a request with a usable id
but bad fields gets an error response and the connection carries on.
"""

from __future__ import annotations

import reprlib
import struct
from collections.abc import Sequence
from typing import Any

import attrs
import cbor2

from univrs import codec
from univrs.codec.strict import load
from univrs.errors import MalformedRequest, ProtocolError, UnivrsError, error_to_plain

PATH = "/client"
PROTOCOL = "client"
VERSION = 1
MAX_FRAME = 4 * 1024 * 1024  # the raft listener's default max_payload_size
MAX_HOPS = 1  # a forwarded request is not forwarded again
MAX_FRAME_REQUESTS = 4096
"""The most requests one frame may carry (the client sends at most 512, connection.py
``MAX_PER_FRAME``). Before the bound a 4 MiB frame of 5-byte requests (``{"id": 0}``) was
800,000 requests, each a decoded map, an error and a response held at once: 1.3 GB of node
memory from one frame."""
MAX_HELLO = 64 * 1024
"""The largest client hello a node reads (a token and three small fields; was ``MAX_FRAME``)."""
MAX_HELLO_ITEMS = 256
"""The most CBOR items in a client hello (it has four keys at most)."""
CONSISTENCIES = ("linearizable", "lease", "local")
CONSISTENCY_MESSAGE = "consistency must be 'linearizable', 'lease' or 'local'"
LEASE_OFF_MESSAGE = (
    "consistency 'lease' is off on this cluster ([raft] read_lease = false); use 'linearizable'"
)

ANSWERS = ("full", "minimal")
ANSWER_MESSAGE = "'answer' must be 'full' or 'minimal'"
MINIMAL_READ_MESSAGE = "answer 'minimal' applies to writes only (a read answers its document)"
OBJECT_WRITES = frozenset(
    {
        "workload.create",
        "workload.update",
        "workload.scale",
        "instance.create",
        "instance.update_status",
        "node.register",
        "node.update_status",
    }
)
"""The writes that answer with their object's document: ``"answer": "minimal"`` makes theirs
``{"id", "version"}`` (a test checks the set against the operations' declared results)."""

_REQUEST_KEYS = frozenset(
    {"id", "op", "args", "key", "consistency", "timeout_ms", "hops", "token", "client", "answer"}
)
MAX_TOKEN_LEN = 512


# Built for every request, on the client and on the node that decodes it, and never changed:
# a plain ``attrs.define`` class (a frozen one pays an ``object.__setattr__`` per field: 1.4 µs
# against 0.6 for these nine, docs/performance.md "Round 15"). Not ``kw_only``: ``_request``
# builds it with positional arguments, in the fields' order (keyword arguments to a class make
# a dict per call, for ``__init__``: 0.3 to 0.5 µs a request for these ten, s29-ha).
@attrs.define(slots=True)
class Request:
    """One operation on the wire (see the module docstring for the fields; not to be changed
    once built)."""

    id: int
    op: str
    args: dict[str, Any] = attrs.field(factory=dict)
    key: tuple[str, int] | None = None
    consistency: str | None = None
    timeout_ms: int | None = None
    hops: int = 0
    token: str | None = None
    client: str | None = None
    answer: str | None = None  # "full" | "minimal" (None: full); sent only when not None

    def to_plain(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "op": self.op, "args": self.args}
        if self.key is not None:
            out["key"] = list(self.key)
        if self.consistency is not None:
            out["consistency"] = self.consistency
        if self.timeout_ms is not None:
            out["timeout_ms"] = self.timeout_ms
        if self.hops:
            out["hops"] = self.hops
        if self.token is not None:
            out["token"] = self.token
        if self.client is not None:
            out["client"] = self.client
        if self.answer is not None:
            out["answer"] = self.answer
        return out


@attrs.frozen(kw_only=True, slots=True)
class BadRequest:
    """A request whose id could be read but whose other fields are malformed."""

    id: int
    error: UnivrsError


def _is_uint(value: object) -> bool:
    return type(value) is int and value >= 0


def encode_client_hello(token: str | None = None) -> bytes:
    doc: dict[str, Any] = {"univrs": PROTOCOL, "v": VERSION}
    if token is not None:
        doc["token"] = token
    return codec.encode_plain(doc)


def check_client_hello(data: bytes | str) -> str | None:
    """The hello's token (None: none); ProtocolError unless ``data`` is a client hello of our
    version."""
    doc = _decode(data, "hello", MAX_HELLO, MAX_HELLO_ITEMS)
    if not (isinstance(doc, dict) and doc.get("univrs") == PROTOCOL):
        raise ProtocolError("the first frame is not a univrs client hello")
    if doc.get("v") != VERSION:
        raise ProtocolError(f"client protocol version {doc.get('v')!r} unsupported (want 1)")
    token = doc.get("token")
    if token is not None and not (type(token) is str and 0 < len(token) <= MAX_TOKEN_LEN):
        raise ProtocolError("the hello's token must be a string of at most 512 characters")
    return token


def encode_server_hello(
    node: str, leader: str | None, members: dict[str, dict[str, str | None]]
) -> bytes:
    return codec.encode_plain(
        {
            "univrs": PROTOCOL,
            "v": VERSION,
            "node": node,
            "leader": leader,
            "members": members,
            "answers": list(ANSWERS),  # an older client ignores the key
        }
    )


def encode_server_refusal(error: UnivrsError) -> bytes:
    return codec.encode_plain({"univrs": PROTOCOL, "v": VERSION, "error": error_to_plain(error)})


@attrs.frozen(kw_only=True)
class ServerHello:
    """What a node says about itself when a client connects."""

    node: str
    leader: str | None
    members: dict[str, dict[str, str | None]]
    # It takes ``"answer": "minimal"`` (its hello lists it; a node of older code does not).
    minimal: bool = False

    def client_address(self, node_id: str) -> str | None:
        """The fast-protocol address (``host:port``) of a member, if known."""
        return (self.members.get(node_id) or {}).get("client")


def decode_server_hello(data: bytes | str) -> ServerHello | dict[str, Any]:
    """The server's hello, or the error map it refused the connection with."""
    doc = _decode(data, "hello")
    if not (isinstance(doc, dict) and doc.get("univrs") == PROTOCOL and doc.get("v") == VERSION):
        raise ProtocolError("the server's first frame is not a univrs client hello (version 1)")
    if "error" in doc:
        error = doc["error"]
        return error if isinstance(error, dict) else {"code": "internal", "message": str(error)}
    node, leader, members = doc.get("node"), doc.get("leader"), doc.get("members")
    if not isinstance(node, str) or not (leader is None or isinstance(leader, str)):
        raise ProtocolError("server hello: node and leader must be strings")
    if not isinstance(members, dict):
        raise ProtocolError("server hello: members must be a map")
    clean: dict[str, dict[str, str | None]] = {}
    for member, info in members.items():
        if not isinstance(member, str) or not isinstance(info, dict):
            raise ProtocolError("server hello: malformed members")
        clean[member] = {
            k: v for k, v in info.items() if k in ("client", "api") and isinstance(v, str)
        }
    answers = doc.get("answers")
    minimal = type(answers) is list and "minimal" in answers
    return ServerHello(node=node, leader=leader, members=clean, minimal=minimal)


def encode_requests(requests: list[Request]) -> bytes:
    return codec.encode_plain([r.to_plain() for r in requests])


def decode_requests(data: bytes | str, *, max_size: int = MAX_FRAME) -> list[Request | BadRequest]:
    """Requests of one frame. Raises ProtocolError when the frame (or a request's id) is
    unusable, carries more than ``MAX_FRAME_REQUESTS`` requests (refused from the array's head,
    before any is decoded) or objects estimated over ``codec.frame_cost_bound(max_size)`` bytes
    (refused from a walk over the item heads, before any is decoded); a request with a readable
    id but bad fields becomes a ``BadRequest``.

    One pass over the decoded frame (s18-ingress): ``codec.decode_plain``'s plain-data check
    (``check_plain``) is not a walk of its own over the whole frame first. A well-formed
    request's fields are plain by the checks that read them (an unsigned ``id``, a str ``op``,
    ``key`` a str and an unsigned int, ...: every known key a str), so of it only ``args`` is
    checked (``check_plain``, or one loop over a map of scalars); a request that is not
    well-formed is checked whole before it becomes a ``BadRequest``, and anything else before
    the frame is refused. So the same frames are refused (``ProtocolError``: a value that is
    not plain data anywhere, at any depth) and the same requests come out as in the two-pass
    form, ``decode_requests_general``, which a differential test holds this one to
    (tests/test_decode_requests_fused.py)."""
    doc = _load_frame(data, max_size)
    if type(doc) is not list:
        codec.check_plain(doc, max_depth=codec.DEFAULT_MAX_DEPTH)
        raise ProtocolError("a request frame must be an array of requests")
    out: list[Request | BadRequest] = []
    append = out.append
    scalars, keys, check = _PLAIN_SCALARS, _PLAIN_KEYS, codec.check_plain
    for item in doc:
        if type(item) is not dict:
            check(item, max_depth=_ITEM_DEPTH)
            raise ProtocolError("every request must be a map with an unsigned integer 'id'")
        rid = item.get("id")
        if type(rid) is not int or rid < 0:
            check(item, max_depth=_ITEM_DEPTH)
            raise ProtocolError("every request must be a map with an unsigned integer 'id'")
        try:
            request = _request(rid, item)
        except MalformedRequest as exc:
            check(item, max_depth=_ITEM_DEPTH)  # its other fields may be anything
            append(BadRequest(id=rid, error=exc))
            continue
        # ``args``: the only field the checks above leave unchecked as plain data. A loop
        # over its few entries, checked whole at the first that is not a scalar under a
        # key of a plain type, costs half the two C passes (``issuperset`` of ``map`` over
        # its keys and values) for a map of one or two entries (s29-ha).
        for name, value in request.args.items():
            if type(value) not in scalars or type(name) not in keys:
                check(request.args, max_depth=_FIELD_DEPTH)
                break
        append(request)
    return out


# ``check_plain``'s depth for a request (an item of the frame's array) and for one of its
# fields: ``decode_plain`` checks the frame at ``DEFAULT_MAX_DEPTH``, each level one less.
_ITEM_DEPTH = codec.DEFAULT_MAX_DEPTH - 1
_FIELD_DEPTH = codec.DEFAULT_MAX_DEPTH - 2
_PLAIN_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_PLAIN_KEYS = frozenset({int, str, bytes})


def _load_frame(data: bytes | str, max_size: int) -> Any:
    """A request frame decoded strictly (``codec.strict.load``: size, item cost, CBOR), not yet
    checked as plain data."""
    if not isinstance(data, str):
        count = codec.array_length(data)
        if count is not None and count > MAX_FRAME_REQUESTS:
            raise ProtocolError(
                f"request frame of {count} requests (at most {MAX_FRAME_REQUESTS} allowed)"
            )
    else:
        raise ProtocolError("request frame: text frame (client frames are binary CBOR)")
    try:
        return load(
            data,
            max_size=max_size,
            max_depth=codec.DEFAULT_MAX_DEPTH,
            what="plain frame",
            max_cost=codec.frame_cost_bound(max_size),
        )
    except ProtocolError as exc:
        raise ProtocolError(f"request frame: {exc}") from None


def decode_requests_general(
    data: bytes | str, *, max_size: int = MAX_FRAME
) -> list[Request | BadRequest]:
    """``decode_requests`` in two passes: the frame decoded as plain data
    (``codec.decode_plain``: the strict load, then the plain check of the whole frame), then
    its requests read. The reference the one-pass form is tested against."""
    if not isinstance(data, str):
        count = codec.array_length(data)
        if count is not None and count > MAX_FRAME_REQUESTS:
            raise ProtocolError(
                f"request frame of {count} requests (at most {MAX_FRAME_REQUESTS} allowed)"
            )
    doc = _decode(data, "request frame", max_size, max_cost=codec.frame_cost_bound(max_size))
    if type(doc) is not list:
        raise ProtocolError("a request frame must be an array of requests")
    out: list[Request | BadRequest] = []
    for item in doc:
        if type(item) is not dict or not _is_uint(item.get("id")):
            raise ProtocolError("every request must be a map with an unsigned integer 'id'")
        rid: int = item["id"]
        try:
            out.append(_request(rid, item))
        except MalformedRequest as exc:
            out.append(BadRequest(id=rid, error=exc))
    return out


def _request(rid: int, item: dict[Any, Any]) -> Request:
    if not _REQUEST_KEYS.issuperset(item):  # one C pass; the first unknown one named below
        unknown = next(k for k in item if k not in _REQUEST_KEYS)
        # Quoted by its first characters: a key may be megabytes (its repr of bytes 4 times
        # that), and the error is answered to the sender (s26-fuzz).
        quoted = _quote(unknown)
        field = str(unknown) if type(unknown) is str and len(unknown) <= _QUOTE else quoted
        raise MalformedRequest(f"unknown request field {quoted}", field=field)
    op, args = item.get("op"), item.get("args", {})
    if type(op) is not str:
        raise MalformedRequest("request 'op' must be a string", field="op")
    if type(args) is not dict:
        raise MalformedRequest("request 'args' must be a map", field="args")
    key = item.get("key")
    if key is not None:
        if not (type(key) is list and len(key) == 2 and type(key[0]) is str and _is_uint(key[1])):
            raise MalformedRequest("request 'key' must be [client_id, seq]", field="key")
        key = (key[0], key[1])
    consistency = item.get("consistency")
    if consistency is not None and consistency not in CONSISTENCIES:
        raise MalformedRequest("request " + CONSISTENCY_MESSAGE, field="consistency")
    timeout_ms = item.get("timeout_ms")
    if timeout_ms is not None and not _is_uint(timeout_ms):
        raise MalformedRequest(
            "request 'timeout_ms' must be an unsigned integer", field="timeout_ms"
        )
    hops = item.get("hops", 0)
    if not _is_uint(hops):
        raise MalformedRequest("request 'hops' must be an unsigned integer", field="hops")
    token, client = item.get("token"), item.get("client")
    if token is not None and not (type(token) is str and 0 < len(token) <= MAX_TOKEN_LEN):
        raise MalformedRequest("request 'token' must be a string", field="token")
    if client is not None and not (type(client) is str and len(client) <= 256):
        raise MalformedRequest("request 'client' must be a string", field="client")
    answer = item.get("answer")
    if answer is not None and answer not in ANSWERS:  # (``in`` a tuple of str: == on str)
        raise MalformedRequest("request " + ANSWER_MESSAGE, field="answer")
    # Positional, in the order of ``Request``'s fields (see the class).
    return Request(rid, op, args, key, consistency, timeout_ms, hops, token, client, answer)


_QUOTE = 64  # the characters (or bytes) of a value quoted in an error answer


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _QUOTE


def _quote(value: object) -> str:
    """``repr(value)`` of a short key, else of its first ``_QUOTE`` characters or bytes and
    its length (never a repr of the whole: ``reprlib`` for containers)."""
    if type(value) is str or type(value) is bytes:
        if len(value) <= _QUOTE:
            return repr(value)
        return f"{value[:_QUOTE]!r}... ({len(value)} long)"
    return _SHORT.repr(value)


def minimal_of(op: str, result: Any, meta: dict[str, Any] | None) -> Any:
    """A write's minimal answer from its full one (an older node's): ``{"id", "version"}``
    of an ``OBJECT_WRITES`` answer, whose ``meta.index`` is the version the write gave its
    object; anything else unchanged (a minimal answer comes back the same)."""
    if op not in OBJECT_WRITES or type(result) is not dict or meta is None:
        return result
    ident, index = result.get("id"), meta.get("index")
    if type(ident) is not str or type(index) is not int:
        return result
    return {"id": ident, "version": index}


@attrs.frozen(slots=True)
class Encoded:
    """A plain document already encoded (``codec.encode_plain``: checked plain), to put in a
    response frame as it is: a read result rendered once and sent in many responses
    (univrs/api/rendered.py). The frame carries the same bytes as if the document were there."""

    data: bytes


def encoded_list(items: Sequence[bytes]) -> Encoded:
    """The CBOR array of ``items`` (each one item's encoding), as one ``Encoded``."""
    return Encoded(_head(4, len(items)) + b"".join(items))


def encode_document(doc: Any) -> Encoded:
    """``doc`` encoded as a response carries it, its ``Encoded`` parts put in as they are."""
    return Encoded(cbor2.dumps(doc, default=_write_encoded))


def _write_encoded(encoder: Any, value: object) -> None:
    if type(value) is not Encoded:
        raise TypeError(f"cannot encode {type(value).__name__} in a response")
    encoder.write(value.data)


def _head(major: int, n: int) -> bytes:
    """A CBOR item head (major type, argument ``n``) in its shortest form, as cbor2 writes it
    (the initial byte and the argument in 1, 2, 4 or 8 big-endian bytes: one ``struct`` call,
    a response id's head per answer in ``encode_responses``)."""
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return _HEAD_1(major << 5 | 24, n)
    if n < 0x10000:
        return _HEAD_2(major << 5 | 25, n)
    if n < 0x100000000:
        return _HEAD_4(major << 5 | 26, n)
    return _HEAD_8(major << 5 | 27, n)


_HEAD_1 = struct.Struct(">BB").pack
_HEAD_2 = struct.Struct(">BH").pack
_HEAD_4 = struct.Struct(">BI").pack
_HEAD_8 = struct.Struct(">BQ").pack


_FRAME_LEADER = b"\xa2" + cbor2.dumps("leader")  # map(2) "leader"
_FRAME_R = cbor2.dumps("r")
_READ_ID = b"\xa2" + cbor2.dumps("id")  # map(2) "id": a response with only "id" and "ok"
_READ_OK = cbor2.dumps("ok")
# map(3) "id": a write's response, {"id", "ok", "meta": {"index": uint}} in this order
_WRITE_ID = b"\xa3" + cbor2.dumps("id")
_WRITE_META = cbor2.dumps("meta") + b"\xa1" + cbor2.dumps("index")


def encode_responses(leader: str | None, responses: list[dict[str, Any]]) -> bytes:
    """A response frame. The documents are the server's own plain data (built by
    ``univrs.api.convert``), so the recursive plain-data check of ``codec.encode_plain`` is
    skipped on this hot path; a bug that put a non-plain value in would make the client's
    strict decoder refuse the frame (a protocol error), never a wrong answer. A value may be
    ``Encoded`` (checked when it was encoded): its bytes go in as they are.

    The frame's bytes are cbor2's for ``{"leader": leader, "r": responses}``, assembled by
    hand: a read answered from a shared rendering (``{"id", "ok": Encoded}``, the most common
    response under read load) is its id's head and the rendering's bytes, with no encoder call
    (cbor2 would look ``Encoded`` up among its types on every response before calling
    ``_write_encoded``), and a write answered with an encoded document (``{"id", "ok":
    Encoded, "meta": {"index"}}``, univrs/api/answers.py) likewise. A minimal write answer
    (``{"id", "ok": {"id": str, "version"}, "meta": {"index"}}``, its version its index: one
    object, ``FrameWait.settle``) is spliced too: cbor2 took 0.8 us to encode one, about a
    quarter of the CPU of a frame of them from the waiters to the socket (session 31). The
    other responses are encoded by cbor2, each run of them between two such answers in one
    call (a list's items are its head followed by each item's bytes, so the run's items are
    the list's bytes without its head). The responses' keys are in the orders shown (the
    server's, ``response_of``: the order is the encoding's); a rendered ``ok`` is checked."""
    parts = [_FRAME_LEADER, cbor2.dumps(leader), _FRAME_R, _head(4, len(responses))]
    append = parts.append
    run: list[dict[str, Any]] = []  # responses left to cbor2, not encoded yet
    for resp in responses:
        ok: Any = resp.get("ok")  # (their types are checked here)
        rid: Any = resp.get("id")
        if type(ok) is Encoded and type(rid) is int and 0 <= rid < 1 << 64:
            n = len(resp)
            if n == 2:
                if run:
                    append(_items(run))
                    run = []
                parts += (_READ_ID, _uint(rid), _READ_OK, ok.data)
                continue
            meta = resp.get("meta")
            if n == 3 and type(meta) is dict and len(meta) == 1:
                index = meta.get("index")
                if type(index) is int and 0 <= index < 1 << 64:
                    # A write's answer (its document encoded: univrs/api/answers.py).
                    if run:
                        append(_items(run))
                        run = []
                    parts += (_WRITE_ID, _uint(rid), _READ_OK, ok.data, _WRITE_META, _uint(index))
                    continue
        elif type(ok) is dict and len(ok) == 2 and len(resp) == 3:
            # A minimal write answer (see the docstring), its shape checked: else cbor2's.
            ident, version, meta = ok.get("id"), ok.get("version"), resp.get("meta")
            if (
                type(meta) is dict
                and len(meta) == 1
                and meta.get("index") is version  # (one object: ``FrameWait.settle``)
                and type(ident) is str
                and type(version) is int
                and type(rid) is int
                and 0 <= version < 1 << 64
                and 0 <= rid < 1 << 64
                and next(iter(ok)) == "id"
            ):
                if run:
                    append(_items(run))
                    run = []
                name = ident.encode()  # (not UTF-8: a ValueError, as from cbor2)
                at, size = _uint(version), len(name)
                text = _TEXT_HEADS[size] if size < 24 else _head(3, size)
                parts += (_WRITE_ID, _uint(rid), _MINIMAL_OK, text, name, _VERSION, at)
                parts += (_WRITE_META, at)
                continue
        run.append(resp)
    if run:
        append(_items(run))
    return b"".join(parts)


def _uint(n: int) -> bytes:
    """``_head(0, n)`` (an unsigned integer), its shifts done ahead of time."""
    if n < 24:
        return _UINT_HEADS[n]
    if n < 0x10000:
        return _HEAD_1(24, n) if n < 0x100 else _HEAD_2(25, n)
    return _HEAD_4(26, n) if n < 0x100000000 else _HEAD_8(27, n)


_UINT_HEADS = [bytes((n,)) for n in range(24)]
_TEXT_HEADS = [bytes((0x60 | n,)) for n in range(24)]
_MINIMAL_OK = _READ_OK + b"\xa2" + cbor2.dumps("id")  # "ok" map(2) "id"
_VERSION = cbor2.dumps("version")


def _items(run: list[dict[str, Any]]) -> bytes:
    """The CBOR items of ``run``, one after the other: one encoder call for all of them."""
    return cbor2.dumps(run, default=_write_encoded)[len(_head(4, len(run))) :]


def decode_responses(
    data: bytes | str, *, max_size: int = MAX_FRAME
) -> tuple[str | None, list[dict[str, Any]]]:
    """(leader hint, responses) of one server frame; raises ProtocolError if malformed."""
    doc = _decode(data, "response frame", max_size)
    if type(doc) is not dict or type(doc.get("r")) is not list:
        raise ProtocolError("a response frame must be a map with an array 'r'")
    leader = doc.get("leader")
    for r in doc["r"]:
        if type(r) is not dict or not _is_uint(r.get("id")):
            raise ProtocolError("every response must be a map with an unsigned integer 'id'")
    return (leader if isinstance(leader, str) else None), doc["r"]


def _decode(
    data: bytes | str,
    what: str,
    max_size: int = MAX_FRAME,
    max_items: int | None = None,
    *,
    max_cost: int | None = None,
) -> Any:
    if isinstance(data, str):
        raise ProtocolError(f"{what}: text frame (client frames are binary CBOR)")
    try:
        return codec.decode_plain(data, max_size=max_size, max_items=max_items, max_cost=max_cost)
    except ProtocolError as exc:
        raise ProtocolError(f"{what}: {exc}") from None
