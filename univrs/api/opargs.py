"""Reading an operation's arguments on the serving node: ids (given or new), versions, pages,
idempotency keys, the object a read or write addresses (``univrs.api.ops`` builds on these).

Nothing here does I/O; every refusal is an ``InvalidArgument`` naming the field, or a
``NotFound`` for an object that is not (or cannot be) there.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

import cbor2

from univrs.api import convert as cv
from univrs.client.protocol import ANSWER_MESSAGE, ANSWERS, MINIMAL_READ_MESSAGE, OBJECT_WRITES
from univrs.errors import InvalidArgument, NotFound
from univrs.service.schemas import DEFAULT_LIMIT, MAX_LIMIT
from univrs.sm.state import ClusterStateMachine
from univrs.sm.validate import MAX_VERSION, VALID_IDS, remembered_id_problem

PAGE_BYTES = 1 << 20  # a list page's encoded items, at most (beyond its first item): 1 MiB


def minimal_answer(answer: object, op: str, is_write: bool) -> bool:
    """Whether operation ``op`` answers minimally (``ops.render_minimal``, s18-answers): its
    request's ``answer`` is "minimal" and ``op`` one of ``protocol.OBJECT_WRITES`` (any other
    write's answer is already small: the same either way). "full" or None: False. Any other
    value, or "minimal" on a read: ``InvalidArgument`` naming the field ``answer`` (the fast
    protocol's decoder refuses other values first; REST callers come here)."""
    if answer is None or answer == "full":
        return False
    if type(answer) is not str or answer not in ANSWERS:
        raise InvalidArgument(ANSWER_MESSAGE, field="answer")
    if not is_write:
        raise InvalidArgument(MINIMAL_READ_MESSAGE, field="answer")
    return op in OBJECT_WRITES


def new_id() -> str:
    """An object id chosen by the serving node before proposing (never inside ``apply``)."""
    return uuid.uuid4().hex


def id_or_new(args: dict[str, Any], name: str = "id") -> str:
    """The id in ``args[name]``, or a new one."""
    # An optional field is absent or of its type: an explicit null is refused (the OpenAPI
    # document does not allow it either).
    return cv.read_id(args[name], name) if name in args else new_id()


def opt_id(args: dict[str, Any], name: str) -> str | None:
    """The id in ``args[name]``, or None."""
    return cv.read_id(args[name], name) if name in args else None


def version(args: dict[str, Any]) -> int | None:
    """The ``expected_version`` of a conditional write, or None."""
    if "expected_version" not in args:
        return None
    return cv.read_int(args["expected_version"], "expected_version", maximum=MAX_VERSION)


def check_key(key: tuple[str, int] | None) -> None:
    """Reject a malformed idempotency key before it reaches the log."""
    if key is None:
        return
    client_id, seq = key
    cv.read_id(client_id, "client_id")
    if type(seq) is not int or not 1 <= seq <= MAX_VERSION:
        raise InvalidArgument("the idempotency seq must be a positive integer", field="seq")


def page(
    items: list[Any], key: Callable[[Any], str], args: dict[str, Any], state: ClusterStateMachine
) -> dict[str, Any]:
    """One page of ``items`` (sorted by ``key``) after ``args["after"]``, at most ``limit``."""
    limit = cv.read_int(args.get("limit", DEFAULT_LIMIT), "limit", minimum=1, maximum=MAX_LIMIT)
    if "after" in args:
        after = cv.read_str(args["after"], "after")
        items = [i for i in items if key(i) > after]
    page = items[:limit]
    more = len(items) > limit
    # ``revision``: the state's revision the list was read at, so a client can list and then
    # watch from revision + 1 without a gap (docs/orchestrator.md).
    return {
        "items": page,
        "next": key(page[-1]) if more and page else None,
        "revision": state.revision,
    }


def page_scan(
    items_after: Callable[[str | None], Iterable[Any]],
    key: Callable[[Any], str],
    args: dict[str, Any],
    state: ClusterStateMachine,
    *,
    ids_after: Callable[[str], Iterable[str]] | None = None,
    show: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:  # ``show`` None: the items are their documents
    """``page`` for a table of the state: ``items_after(after)`` yields the (filtered) items
    in id order from the first id after ``after`` (a range scan of the ordered table,
    ``univrs.sm.tables``); at most ``limit`` + 1 are taken, so an unfiltered page costs
    O(log n + limit), not a sort of the table.

    The look-ahead (is there a next page?) reads as little as it can: with ``ids_after``
    (the ids ``items_after`` would give the items of, for a list whose filter needs no
    item), ``limit`` items are read and then one id after the last; else the ``limit`` + 1-th
    item is read but not shown. ``show`` turns each item of the page (not the look-ahead)
    into its document, inside the page's read (a workload's status: its counts row).

    A page also ends once its items' encoding would pass ``PAGE_BYTES`` (its first item
    always goes in), with ``next`` set: the caller pages on as for a full page (s15-budget,
    B1: a page of 1,000 big workloads was too big for a frame, and the node held it whole).
    Sized in CBOR, the fast protocol's encoding (JSON is about as long for these documents)."""
    limit = cv.read_int(args.get("limit", DEFAULT_LIMIT), "limit", minimum=1, maximum=MAX_LIMIT)
    after = cv.read_str(args["after"], "after") if "after" in args else None
    with state.reading():  # one read transaction for the page's scan and lookups
        # Lazily: no more than one item past the page is read, on items or on bytes.
        source = islice(items_after(after), limit if ids_after is not None else limit + 1)
        items: list[Any] = []
        docs: list[Any] = []
        total = 0
        more = False
        for item in source:
            if len(items) == limit:  # the look-ahead item: read, not shown
                more = True
                break
            doc = item if show is None else show(item)
            total += len(cbor2.dumps(doc))
            if total > PAGE_BYTES and docs:  # ended on bytes: the next page starts here
                more = True
                break
            items.append(item)
            docs.append(doc)
        else:
            if ids_after is not None and items:
                more = next(iter(ids_after(key(items[-1]))), None) is not None
    return {
        "items": docs,
        "next": key(items[-1]) if more and items else None,
        "revision": state.revision,  # as in ``page``
    }


def read_object(args: dict[str, Any], state: ClusterStateMachine, what: str) -> Any:
    """The workload, instance or node ``args["id"]`` names; NotFound if there is none."""
    ident = cv.read_str(args.get("id"), "id") if "id" in args else None
    if ident is None:
        raise InvalidArgument("missing field 'id'", field="id")
    found = {
        "workload": state.get_workload,
        "instance": state.get_instance,
        "node": state.get_node,
    }[what](ident)
    if found is None:
        raise NotFound(f"{what} {ident!r} not found")
    return found


def existing_id(args: dict[str, Any], what: str) -> str:
    """The id of an object a write addresses; one that cannot exist is simply not found."""
    ident = args["id"]
    if type(ident) is str and ident in VALID_IDS:  # passed the id check lately: a valid id
        return ident
    ident = cv.read_str(ident, "id")
    if remembered_id_problem("id", ident) is not None:
        raise NotFound(f"{what} {ident!r} not found")
    return ident


def gone(ident: str, response: object) -> dict[str, Any]:
    """The result of a write that applied, rendered after a later command (a concurrent
    delete, applied in the same batch or before the rendering) removed its object: what the
    write itself did (its id and version) and ``"deleted": true``.

    Before: ``not-found``, an answer that means "not applied" (docs/api.md, "Write
    outcomes") for a write that had applied. Found by chaos (snapshot-install-under-faults,
    seed 502, memory backend): a compare-and-set whose keyed retry was answered after a
    concurrent delete came back as not-found, which the client took for a mismatch: the
    history showed its value read, from a write reported as not done (not linearizable)."""
    return {"id": ident, "version": getattr(response, "version", None), "deleted": True}
