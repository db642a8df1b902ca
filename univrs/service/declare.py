"""How an operation of the client surface is declared (the table is ``operations.py``).

The records of a declaration: an ``Operation`` with its ``Param`` arguments (each with its
``Type``, where REST carries it, and how the CLI takes it: an ``Arg`` or an ``Opt``), its REST
route (``Http``) and its CLI command (``Command``). Then the arguments and shapes that many
operations share (an object's id in the path, ``expected_version``, paging, filters) and the
shapes of whole operations (get one object by id, list in pages, delete one by id), so each row
of the table says only what is its own.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from univrs.service import schemas as s

__all__ = [
    "ANY_TOKEN",
    "PUBLIC",
    "STRING",
    "Arg",
    "Command",
    "Http",
    "Kind",
    "Operation",
    "Opt",
    "Param",
    "Type",
    "Where",
    "delete_one",
    "expected_version",
    "get_one",
    "in_path",
    "labels_selector",
    "list_paged",
    "new_id",
    "page_params",
    "required_id",
    "status_arg",
    "status_filter",
    "text_filter",
    "workload_spec",
]


class Kind(enum.Enum):
    """What an operation does to the replicated state."""

    READ = "read"  # served from a state machine at a consistency; never proposed
    WRITE = "write"  # proposed through the log; exactly once with an idempotency key
    # A write that takes no key: it opens or closes the keys' session, or bootstraps the
    # tokens (which must work before anyone holds one).
    SESSION = "session"


PUBLIC = "public"
"""The ``role`` of an operation anyone may call even when auth is on (``token.bootstrap``)."""

ANY_TOKEN = "any-token"
"""The ``role`` of an operation every valid token may call, whatever its roles (opening and
closing the idempotency session its writes use: a ``credits``-only token mints through one)."""


class Where(enum.Enum):
    """Where REST carries an argument (the fast protocol sends every argument in ``args``)."""

    PATH = "path"
    QUERY = "query"
    BODY = "body"


class Type(enum.Enum):
    """The shape of an argument's value: the client's annotation, the CLI's conversion."""

    STR = "str"
    INT = "int"
    STR_LIST = "list[str]"  # CLI: a repeatable option
    STR_MAP = "dict[str, str]"  # CLI: a repeatable KEY=VALUE option; REST query: repeated k=v
    RESOURCES = "dict[str, int]"  # CLI: --cpu-millis and --memory-bytes
    WORKLOAD_SPEC = "dict[str, Any]"  # CLI: --file or --name, --image, --replicas ...


@attrs.frozen
class Arg:
    """The CLI takes the argument as a positional argument called ``name`` (``IDENT``)."""

    name: str


@attrs.frozen(kw_only=True)
class Opt:
    """The CLI takes the argument as an option. For ``RESOURCES``, ``flag`` is unused and
    ``help`` names what the numbers are (``capacity``); a ``WORKLOAD_SPEC`` needs no help."""

    flag: str = ""
    help: str = ""
    required: bool = False


@attrs.frozen(kw_only=True)
class Param:
    """One argument of an operation."""

    name: str  # the argument's name: in ``args``, in a REST body or query, the client's keyword
    type: Type
    schema: dict[str, Any]  # JSON Schema of the value where REST carries it (path: a string)
    required: bool = False
    where: Where = Where.BODY
    rest_name: str | None = None  # the REST query parameter, when not ``name`` (``label``)
    description: str | None = None  # OpenAPI description (query parameters)
    cli: Arg | Opt | None = None  # how the CLI takes it; None: not on the command line

    @property
    def query_name(self) -> str:
        return self.rest_name or self.name


@attrs.frozen(kw_only=True)
class Http:
    """The REST route of an operation."""

    method: str
    path: str  # ``{name}`` marks the PATH argument
    versioned: bool = False  # accepts ``If-Match`` (the object's version)
    creates: bool = False  # answers 201 with ``Location: <path>/<id>``
    body: bool | None = None  # takes a JSON object body (default: it has BODY arguments)


@attrs.frozen(kw_only=True)
class Command:
    """The CLI command of an operation: ``univrs <group> <name>``."""

    group: str
    name: str
    help: str


@attrs.frozen(kw_only=True)
class Operation:
    """One operation of the client surface (see ``univrs.service.operations``)."""

    name: str
    kind: Kind
    summary: str  # one line: the REST summary, the client method's docstring
    http: Http
    result: str  # the name of the result's schema (``univrs.service.schemas.SCHEMAS``)
    params: tuple[Param, ...] = ()
    client: str | None = None  # the Python client's method; None: only ``call(name, ...)``
    cli: Command | None = None  # None: no generated command
    # The role a token needs once auth is on (``univrs.sm.tokens.ROLES``, ``PUBLIC`` or
    # ``ANY_TOKEN``);
    # None: ``read`` for reads, ``write`` for writes.
    role: str | None = None

    @property
    def required_role(self) -> str:
        """The role a caller's token needs for this operation (``PUBLIC``: none)."""
        if self.role is not None:
            return self.role
        return "read" if self.kind is Kind.READ else "write"

    @property
    def is_write(self) -> bool:
        return self.kind is not Kind.READ

    @property
    def allowed_when_full(self) -> bool:
        """Served while the storage quota's NOSPACE alarm is raised: reads, deletes (they free
        space) and opening the session a delete is sent with."""
        return self.kind is Kind.READ or self.http.method == "DELETE" or self.name == "session.open"

    @property
    def keyed(self) -> bool:
        """A write that accepts an idempotency key."""
        return self.kind is Kind.WRITE

    @property
    def paged(self) -> bool:
        """A list answered in pages (``limit``, ``after``; the result has ``next``)."""
        return any(p.name == "after" for p in self.params)

    def located(self, where: Where) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.where is where)

    @property
    def path_param(self) -> Param | None:
        found = self.located(Where.PATH)
        return found[0] if found else None

    @property
    def has_body(self) -> bool:
        return self.http.body if self.http.body is not None else bool(self.located(Where.BODY))


# ---------------------------------------------------------------- arguments used by many

STRING = {"type": "string"}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": s.MAX_LIMIT, "default": s.DEFAULT_LIMIT}
_VERSION_HELP = "Fail with a conflict unless at this version."


def in_path(name: str, arg: str = "ident") -> Param:
    """The object the operation addresses, named in the URL path."""
    return Param(
        name=name, type=Type.STR, schema=STRING, required=True, where=Where.PATH, cli=Arg(arg)
    )


def expected_version(where: Where = Where.BODY) -> Param:
    return Param(
        name="expected_version",
        type=Type.INT,
        schema=s.VERSION,
        where=where,
        description="same as If-Match" if where is Where.QUERY else None,
        cli=Opt(flag="--expected-version", help=_VERSION_HELP),
    )


def new_id(what: str) -> Param:
    return Param(
        name="id",
        type=Type.STR,
        schema=s.ID,
        cli=Opt(flag="--id", help=f"Id of the new {what} (default: assigned by the node)."),
    )


def labels_selector() -> Param:
    return Param(
        name="labels",
        type=Type.STR_MAP,
        schema={"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}},
        where=Where.QUERY,
        rest_name="label",
        description="key=value; repeat for several labels (all must match)",
        cli=Opt(flag="--label", help="KEY=VALUE that must match (repeatable)."),
    )


def text_filter(name: str, *, flag: str, help: str, description: str | None = None) -> Param:
    """A query parameter that keeps the objects whose ``name`` is exactly the given string."""
    return Param(
        name=name,
        type=Type.STR,
        schema=STRING,
        where=Where.QUERY,
        description=description,
        cli=Opt(flag=flag, help=help),
    )


def status_filter(statuses: tuple[str, ...], what: str) -> Param:
    return Param(
        name="status",
        type=Type.STR,
        schema={"type": "string", "enum": list(statuses)},
        where=Where.QUERY,
        cli=Opt(flag="--status", help=f"Only {what} with this status."),
    )


def page_params() -> tuple[Param, ...]:
    return (
        Param(
            name="limit",
            type=Type.INT,
            schema=_LIMIT,
            where=Where.QUERY,
            description="page size",
            cli=Opt(flag="--limit", help="One page of at most this many (default: all)."),
        ),
        Param(
            name="after",
            type=Type.STR,
            schema=STRING,
            where=Where.QUERY,
            description="the 'next' of the previous page",
            cli=Opt(flag="--after", help="Start after this id (from a previous page)."),
        ),
    )


def workload_spec() -> Param:
    return Param(
        name="spec",
        type=Type.WORKLOAD_SPEC,
        schema=s.ref("WorkloadSpec"),
        required=True,
        cli=Opt(),
    )


def required_id(name: str, arg: str | None = None) -> Param:
    """An id the operation needs in its body; the CLI takes it as positional ``arg``
    (default: ``name``)."""
    return Param(name=name, type=Type.STR, schema=s.ID, required=True, cli=Arg(arg or name))


def status_arg(schema: dict[str, Any]) -> Param:
    """The status an operation sets; the CLI takes it as positional ``status``."""
    return Param(name="status", type=Type.STR, schema=schema, required=True, cli=Arg("status"))


# ---------------------------------------------------------------- shapes used by many


def get_one(
    *, name: str, summary: str, path: str, result: str, client: str, cli: Command
) -> Operation:
    """Read one object, named by its ``id`` in ``path`` (``GET``)."""
    return Operation(
        name=name,
        kind=Kind.READ,
        summary=summary,
        http=Http(method="GET", path=path),
        params=(in_path("id"),),
        result=result,
        client=client,
        cli=cli,
    )


def list_paged(
    *,
    name: str,
    summary: str,
    path: str,
    filters: tuple[Param, ...] = (),
    result: str,
    client: str,
    cli: Command | None = None,
    role: str | None = None,
) -> Operation:
    """List objects (``GET``), narrowed by ``filters`` and answered in pages (``limit``,
    ``after``)."""
    return Operation(
        name=name,
        kind=Kind.READ,
        summary=summary,
        http=Http(method="GET", path=path),
        params=(*filters, *page_params()),
        result=result,
        client=client,
        cli=cli,
        role=role,
    )


def delete_one(*, name: str, summary: str, path: str, client: str, cli: Command) -> Operation:
    """Delete one object, named by its ``id`` in ``path``, unless its version is not the
    expected one (``DELETE``, ``If-Match`` or ``expected_version`` in the query)."""
    return Operation(
        name=name,
        kind=Kind.WRITE,
        summary=summary,
        http=Http(method="DELETE", path=path, versioned=True),
        params=(in_path("id"), expected_version(Where.QUERY)),
        result="Deleted",
        client=client,
        cli=cli,
    )
