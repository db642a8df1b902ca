"""The client library's requests as they go on the wire (s19-client): ``plain_request`` builds
and checks one request's map, ``encode_plain_requests`` a frame of them.

Theory of operation. ``protocol.encode_requests`` encodes a frame of ``Request`` objects with
``codec.encode_plain``, which walks the whole frame to refuse what is not plain data: for every
request its every field, though the library filled in most of them itself (an int id, a str op,
the session's ``(str, int)`` key, an int deadline). The library's connection
(univrs/client/connection.py) instead builds each request's map when it is queued, checking the
caller's ``args`` (and any field of an unexpected type) by ``encode_plain``'s rule at the depth
it has in the frame, and its own fields by their types: a bad request fails alone, at once, and
the writer encodes a frame of checked maps with one cbor2 call and no second walk. The bytes are
``encode_requests``'s for the same requests (tests/api/test_client_requests.py).
"""

from __future__ import annotations

from typing import Any

import cbor2

from univrs import codec
from univrs.codec.plain import _check_plain_out as check_out

__all__ = ["encode_plain_requests", "plain_request"]

_UINT_MAX = (1 << 64) - 1
# The depth ``encode_plain`` checks a request's field at: the frame's array, the request's map.
_FIELD_DEPTH = codec.DEFAULT_MAX_DEPTH - 2


def plain_request(
    rid: int,
    op: str,
    args: dict[str, Any],
    key: tuple[str, int] | None = None,
    consistency: str | None = None,
    timeout_ms: int | None = None,
    hops: int = 0,
    token: str | None = None,
    client: str | None = None,
    answer: str | None = None,
) -> dict[str, Any]:
    """``Request(...).to_plain()``, checked plain data, as the client library queues it: a frame
    of these is ``encode_plain_requests`` (s19-client). Raises ``TypeError`` for what
    ``encode_requests`` would refuse in it (``codec.encode_plain``'s rule: the request's fields
    and ``args`` at the depths they have in the frame), so a frame of checked requests is never
    refused, and a bad request fails alone. The fields the library fills in (an int id, the
    session's ``(str, int)`` key, a str op and answer, an int deadline) are checked by their
    types; ``args``, and any field of another type, by the general rule."""
    out: dict[str, Any] = {"id": rid, "op": op, "args": args}
    if type(rid) is not int or not 0 <= rid <= _UINT_MAX or type(op) is not str:
        check_out(rid, _FIELD_DEPTH)
        check_out(op, _FIELD_DEPTH)
    if args:  # (an empty map is plain; a non-map is checked, and refused, here)
        check_out(args, _FIELD_DEPTH)
    elif type(args) is not dict:
        check_out(args, _FIELD_DEPTH)
    if key is not None:
        if not (
            type(key) is tuple
            and len(key) == 2
            and type(key[0]) is str
            and type(key[1]) is int
            and 0 <= key[1] <= _UINT_MAX
        ):
            key = list(key)  # type: ignore[assignment]  # as ``to_plain`` sends it
            check_out(key, _FIELD_DEPTH)
        out["key"] = key  # a tuple encodes as the array ``to_plain``'s list does
    if consistency is not None:
        if type(consistency) is not str:
            check_out(consistency, _FIELD_DEPTH)
        out["consistency"] = consistency
    if timeout_ms is not None:
        if type(timeout_ms) is not int or not 0 <= timeout_ms <= _UINT_MAX:
            check_out(timeout_ms, _FIELD_DEPTH)
        out["timeout_ms"] = timeout_ms
    if hops:
        check_out(hops, _FIELD_DEPTH)
        out["hops"] = hops
    if token is not None:
        if type(token) is not str:
            check_out(token, _FIELD_DEPTH)
        out["token"] = token
    if client is not None:
        if type(client) is not str:
            check_out(client, _FIELD_DEPTH)
        out["client"] = client
    if answer is not None:
        if type(answer) is not str:
            check_out(answer, _FIELD_DEPTH)
        out["answer"] = answer
    return out


def encode_plain_requests(requests: list[dict[str, Any]]) -> bytes:
    """A request frame of ``plain_request``s (checked there: not again here). The bytes are
    ``encode_requests``'s of the same requests."""
    return cbor2.dumps(requests)
