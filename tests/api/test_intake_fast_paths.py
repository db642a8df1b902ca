"""A leader's intake of writes, session 31: the passing cases written out in
``ops._checked``'s build wrapper, ``ops._build_scale_workload`` and ``WriteBuilder.build``'s
key check give the same value or the same error as the general code they skip (kept here as
it was), over valid and invalid arguments and keys, with the ids remembered as valid
(``VALID_IDS``: the written-out path) and not (the general one). Each test says which change
it catches."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import pytest

from univrs.api import convert as cv
from univrs.api import opargs as oa
from univrs.api import ops
from univrs.api.auth import ANONYMOUS
from univrs.api.building import WriteBuilder
from univrs.api.writes import check_session_owner
from univrs.errors import UnivrsError
from univrs.sm.commands import CloseSession, OpenSession
from univrs.sm.validate import MAX_REPLICAS, MAX_VERSION, VALID_IDS

_IDS: list[Any] = ["w-1", "bench-0", "", "Bad Id!", "x" * 300, "\ud800", 7, None, b"w-1", ["w"]]
_INTS: list[Any] = [0, 1, 3, MAX_REPLICAS, MAX_REPLICAS + 1, -1, 1 << 70, True, False]
_INTS += [2.0, 2.5, float("nan"), "3", None, MAX_VERSION, MAX_VERSION + 1]


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """What ``fn()`` gives: its value, or its exception's type, message and field."""
    try:
        return "value", fn()
    except UnivrsError as exc:
        return "error", (type(exc), str(exc), exc.field)
    except Exception as exc:
        return "error", (type(exc), str(exc), None)


def _both_ways(fn: Callable[[], Any], ident: object) -> list[tuple[str, Any]]:
    """``fn()``'s outcomes with ``ident`` not remembered as valid, then remembered (if it
    is a valid id: the general path remembers it)."""
    VALID_IDS.clear()
    first = _outcome(fn)
    _outcome(lambda: cv.read_id(ident, "id"))  # remembered if valid
    return [first, _outcome(fn)]


def _scale_general(args: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``_build_scale_workload`` before session 31."""
    ident = oa.existing_id(args, "workload")
    replicas = cv.read_int(args["replicas"], "replicas", maximum=MAX_REPLICAS)
    return ops._new_scale(ident, replicas, oa.version(args)), args


def test_scale_build_matches_the_general_one() -> None:
    """``_build_scale_workload`` (a remembered id and an int in range taken as they are) gives
    the command, or the error, of ``existing_id``, ``read_int`` and ``version``, in their
    order. Fails if the written-out checks let through (or refuse) anything the general ones
    do not, or answer another error first."""
    versions: list[Any] = [None, 0, 5, MAX_VERSION, MAX_VERSION + 1, -1, True, 4.0, "1"]
    for ident, replicas, version in itertools.product(_IDS, _INTS, versions):
        args: dict[str, Any] = {"id": ident, "replicas": replicas}
        if version is not None:
            args["expected_version"] = version
        got = _both_ways(partial(ops._build_scale_workload, args), ident)
        want = _both_ways(partial(_scale_general, args), ident)
        assert got == want, (args, got, want)
        for (kind, value), (_, general) in zip(got, want, strict=True):
            if kind == "value":  # the same args object handed on, and the same value types
                assert value[1] is args
                assert [type(v) for v in attrs_values(value[0])] == [
                    type(v) for v in attrs_values(general[0])
                ]
    VALID_IDS.clear()


def attrs_values(obj: Any) -> list[Any]:
    return [getattr(obj, name) for name in obj.__slots__ if not name.startswith("__")]


def _checked_general(declaration: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``ops._checked`` before session 31."""
    required = tuple(p.name for p in declaration.params if p.required)
    optional = tuple(p.name for p in declaration.params if not p.required)
    allowed = frozenset(required) | frozenset(optional)

    def run(args: Any, *rest: Any) -> Any:
        if not (
            type(args) is dict
            and allowed.issuperset(args)
            and all(map(args.__contains__, required))
        ):
            cv.read_object(args, "", required=required, optional=optional)
        return fn(args, *rest)

    return run


@pytest.mark.parametrize("name", sorted(n for n, h in ops.HANDLERS.items() if not h.watch))
def test_argument_check_matches_the_general_one(name: str) -> None:
    """Every operation's argument check (``keys() >= needed``; a build's wrapper of one
    argument, a read's of two) passes and refuses what ``all`` over ``map`` did, with the
    same error: the required ones alone, with each optional one, one missing, an unknown
    one, keys of other types, values that are not maps. Fails if one answer differs."""
    handler = ops.HANDLERS[name]
    declaration = handler.declaration
    required = [p.name for p in declaration.params if p.required]
    optional = [p.name for p in declaration.params if not p.required]
    shapes: list[Any] = [dict.fromkeys(required, 1)]
    shapes += [dict.fromkeys([*required, o], 1) for o in optional]
    shapes += [dict.fromkeys(required + optional, "x")]
    shapes += [dict.fromkeys([r for r in required if r != gone], 1) for gone in required]
    shapes += [{**dict.fromkeys(required, 1), "unknown": 1}, {}, {1: 1}, {b"id": 1}]
    shapes += [{("id",): 1, **dict.fromkeys(required, 1)}, [], None, "id", ["id"]]
    write = handler.build is not None
    calls: list[Any] = []

    def fn(*args: Any) -> Any:
        calls.append(args)
        return "ran"

    fast = ops._checked(declaration, fn, write)
    general = _checked_general(declaration, fn)
    rest = () if write else ("state",)
    for args in shapes:
        got = _outcome(partial(fast, args, *rest))
        got_calls, calls[:] = list(calls), []
        want = _outcome(partial(general, args, *rest))
        assert (got, got_calls) == (want, calls), (name, args, got, want)
        calls.clear()


class _Sessions:
    """The applied state the session-owner check reads: every session opened by token:t1."""

    def session(self, client_id: str) -> Any:
        return type("Session", (), {"owner": "token:t1"})()


def _builder(name: str, owner: str) -> WriteBuilder:
    return WriteBuilder(
        cast(Any, None),
        cast(Any, None),
        ops.HANDLERS[name],
        ANONYMOUS,
        owner,
        False,
        cast(Any, _Sessions()),
    )


@pytest.mark.parametrize("owner", ["127.0.0.1", "token:t1", "token:t2"])
def test_write_builder_checks_a_key_as_check_key(owner: str) -> None:
    """``WriteBuilder.build``'s key check (a remembered client id and a seq in range taken as
    they are) refuses exactly the keys ``check_key`` refuses, with its error, then checks the
    session's owner (token:t2 is refused: token:t1 opened every session here), before the
    arguments are read; a key that passes is the envelope's. Fails if one answer differs."""
    client_ids: list[Any] = ["c-1", "c" * 200, "Bad Id!", "", "\ud800", 5, None, b"c-1"]
    seqs: list[Any] = [1, 2, MAX_VERSION, 0, -1, MAX_VERSION + 1, True, 1.0, "1", None]
    keys: list[Any] = [(c, s) for c in client_ids for s in seqs]
    keys += [("c-1",), ("c-1", 1, 2), (), ["c-1", 1]]
    builder = _builder("workload.scale", owner)
    bad_args = {"id": "w-1", "replicas": -1}  # refused after the key
    for key, args in itertools.product(keys, [{"id": "w-1", "replicas": 2}, bad_args]):
        ident = key[0] if len(key) else None

        def built(args: dict[str, Any] = args, key: Any = key) -> Any:
            envelope = builder.build(args, key).envelope
            return (envelope.client_id, envelope.seq, envelope.owner)

        def general(args: dict[str, Any] = args, key: Any = key) -> Any:
            oa.check_key(key)
            check_session_owner(cast(Any, _Sessions()), key[0], owner)
            ops.HANDLERS["workload.scale"].build(args)  # type: ignore[misc]
            return (key[0], key[1], owner if owner.startswith("token:") else None)

        got, want = _both_ways(built, ident), _both_ways(general, ident)
        assert got == want, (key, args, got, want)
    VALID_IDS.clear()


def test_only_the_session_operations_build_session_commands() -> None:
    """``WriteBuilder.build`` looks for ``OpenSession`` and ``CloseSession`` (to set their
    owner) only in the session operations' commands (``UNKEYED``): no other operation's
    build names them. Fails if one does (its command would keep no owner)."""
    for name, handler in ops.HANDLERS.items():
        if handler.build is None or name in ops.UNKEYED:
            continue
        cells = [c.cell_contents for c in handler.build.__closure__ or ()]
        built = [c for c in cells if callable(c) and hasattr(c, "__code__")]
        assert built, name
        for fn in built:
            names = set(fn.__code__.co_names)
            for cell in fn.__closure__ or ():
                names |= {getattr(cell.cell_contents, "__name__", "")}
            assert not names & {OpenSession.__name__, CloseSession.__name__}, name
    opened = _builder("session.open", "token:t1").build({}, None)
    closed = _builder("session.close", "token:t1").build({"client_id": "c-1"}, None)
    assert opened.envelope.command == OpenSession(owner="token:t1")
    assert closed.envelope.command == CloseSession(client_id="c-1", owner="token:t1")
