"""Reading a snapshot: ``restore_plain`` and the row readers of every format version.

The format is described in ``univrs/sm/snapshot.py``. Every row is read strictly: a fast path
for well-formed rows (all of them, normally) and a checked path that names what is wrong;
malformed data, an unknown version or broken invariants raise ``DecodeError``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from univrs.sm.errors import DecodeError
from univrs.sm.model import (
    Instance,
    InstanceStatus,
    Node,
    NodeInfo,
    NodeStatus,
    Pairs,
    Port,
    PortProtocol,
    Resources,
    WorkloadSpec,
)
from univrs.sm.objects import Objects, StagedRows, StoredWorkload
from univrs.sm.plain import (
    fail,
    read_enum,
    read_list,
    read_map,
    read_uint,
    response_from_plain,
)
from univrs.sm.sessions import Session, SessionPolicy
from univrs.sm.snapshot_canon import workload_head_ok
from univrs.sm.snapshot_format import (
    OPTIONAL_KEYS,
    SNAPSHOT_FORMAT,
    STOP_EVERY,
    TOP_KEYS,
    CheckStopped,
    check_stop,
    gc_paused,
)
from univrs.sm.state import ClusterStateMachine
from univrs.sm.tokens import Token
from univrs.sm.validate import id_problem


class _Row:
    """A strict cursor over one row. ``fields(kinds)`` takes the next ``len(kinds)`` items and
    checks each one's type: ``s`` str, ``o`` str or None, ``i`` int, ``u`` int >= 0, ``a`` any.
    ``done`` refuses leftover items."""

    __slots__ = ("items", "path", "pos")

    def __init__(self, value: Any, path: str) -> None:
        self.items: list[Any] = read_list(value, path)
        self.path = path
        self.pos = 0

    def fields(self, kinds: str) -> list[Any]:
        start, end = self.pos, self.pos + len(kinds)
        values = self.items[start:end]
        if len(values) != len(kinds):
            raise DecodeError(f"{self.path}: row too short ({len(self.items)} items)")
        if kinds.count("s") != len(kinds) or not all(type(v) is str for v in values):
            for offset, (value, kind) in enumerate(zip(values, kinds, strict=True)):
                if not _KIND_OK[kind](value):
                    fail(f"{self.path}[{start + offset}]", _KIND_NAME[kind], value)
        self.pos = end
        return values

    def _count(self, per_item: int) -> int:
        """A count of items that follow, refused before anything is sized by it (a corrupt
        count must not make us allocate for it)."""
        (n,) = self.fields("u")
        if n * per_item > len(self.items) - self.pos:
            raise DecodeError(f"{self.path}: count {n} exceeds the row ({len(self.items)} items)")
        return int(n)

    def texts(self) -> tuple[str, ...]:
        n = self._count(1)
        return tuple(self.fields("s" * n))

    def pairs(self) -> Pairs:
        n = self._count(2)
        flat = self.fields("s" * (2 * n))
        return tuple(zip(flat[::2], flat[1::2], strict=True))

    def done(self) -> None:
        if self.pos != len(self.items):
            raise DecodeError(f"{self.path}: {len(self.items) - self.pos} unexpected items")


_KIND_OK: dict[str, Callable[[Any], bool]] = {
    "s": lambda v: type(v) is str,
    "o": lambda v: v is None or type(v) is str,
    "i": lambda v: type(v) is int,
    "u": lambda v: type(v) is int and v >= 0,
    "a": lambda v: True,
}
_KIND_NAME = {
    "s": "a string",
    "o": "a string or null",
    "i": "an integer",
    "u": "a non-negative integer",
    "a": "a value",
}


class _Shared:
    """Equal sub-values read from one snapshot become one shared object (they are immutable):
    clusters repeat resource sizes, ports and label sets across many workloads, so restore
    builds each once, and the restored state takes less memory. ``texts`` does the same for
    strings that repeat across rows: an instance's workload id is the workload's own id
    string, its node id one string per node, images, argument lists and messages one each."""

    __slots__ = ("args", "pairs", "ports", "resources", "texts")

    def __init__(self) -> None:
        self.resources: dict[tuple[int, int], Resources] = {}
        self.ports: dict[tuple[Any, ...], tuple[Port, ...]] = {}
        self.pairs: dict[tuple[str, ...], Pairs] = {}
        self.texts: dict[str, str] = {}
        self.args: dict[tuple[str, ...], tuple[str, ...]] = {}

    def get_resources(self, cpu: int, memory: int) -> Resources:
        key = (cpu, memory)
        found = self.resources.get(key)
        if found is None:
            found = self.resources[key] = Resources(cpu_millis=cpu, memory_bytes=memory)
        return found

    def get_pairs(self, flat: list[str]) -> Pairs:
        key = tuple(flat)
        found = self.pairs.get(key)
        if found is None:
            found = self.pairs[key] = tuple(zip(flat[::2], flat[1::2], strict=True))
        return found

    def get_ports(self, flat: list[Any]) -> tuple[Port, ...] | None:
        key = tuple(flat)
        found = self.ports.get(key)
        if found is None:
            ports = []
            for at in range(0, len(flat), 3):
                number, protocol, name = flat[at : at + 3]
                if type(number) is not int or type(name) is not str:
                    return None
                ports.append(
                    Port(container_port=number, protocol=PortProtocol(protocol), name=name)
                )
            found = self.ports[key] = tuple(ports)
        return found


def _workload_v1(value: Any, path: str, shared: _Shared | None = None) -> StoredWorkload:
    # The fast path reads well-formed rows (all of them, normally) several times faster;
    # anything it does not like goes through the checked path, which names what is wrong.
    fast = _workload_fast(value, shared or _Shared()) if type(value) is list else None
    workload = fast if fast is not None else _workload_checked(value, path)
    _no_nul(workload.id, path)
    return workload


def _no_nul(ident: str, path: str) -> None:
    """An id that is a key in a persistent backend holds no NUL (s14-review2): the LMDB
    indexes join two ids with a NUL (``sm_store.SEP``: workload ``a`` with instance ``b NUL
    c`` and workload ``a NUL b`` with instance ``c`` made one index key), and a session's
    responses are the range ``client id + NUL``. No command can name such an id
    (``id_problem``); ``snapshot_canon`` refuses the same rows."""
    if "\x00" in ident:
        raise DecodeError(f"{path}: id {ident!r} holds a NUL character")


_JUST_STR = frozenset({str})


def _workload_fast(v: list[Any], shared: _Shared) -> StoredWorkload | None:
    try:
        if not workload_head_ok(v):
            return None
        ident, version, created, name, image, replicas, cpu, memory, n_args = v[:9]
        env_at = 9 + n_args
        n_env = v[env_at]
        labels_at = env_at + 1 + 2 * n_env
        n_labels = v[labels_at]
        ports_at = labels_at + 1 + 2 * n_labels
        n_ports = v[ports_at]
        if not (
            type(n_env) is int
            and n_env >= 0
            and type(n_labels) is int
            and n_labels >= 0
            and type(n_ports) is int
            and n_ports >= 0
            and ports_at + 1 + 3 * n_ports == len(v)  # so every slice below is exact
        ):
            return None
        args, env, labels = v[9:env_at], v[env_at + 1 : labels_at], v[labels_at + 1 : ports_at]
        if not set(map(type, args + env + labels)) <= _JUST_STR:  # exact str, in one C pass
            return None
        ports = shared.get_ports(v[ports_at + 1 :])
        if ports is None:
            return None
    except (IndexError, ValueError, TypeError):
        return None
    texts = shared.texts
    ident = texts.setdefault(ident, ident)  # the one copy instances of it will share
    key = tuple(args)
    spec = WorkloadSpec(
        name=name,
        image=texts.setdefault(image, image),
        replicas=replicas,
        args=shared.args.setdefault(key, key),
        env=shared.get_pairs(env),
        labels=shared.get_pairs(labels),
        resources=shared.get_resources(cpu, memory),
        ports=ports,
    )
    return StoredWorkload(id=ident, spec=spec, version=version, created_index=created)


def _workload_checked(value: Any, path: str) -> StoredWorkload:
    row = _Row(value, path)
    ident, version, created, name, image, replicas, cpu, memory = row.fields("suussiii")
    args, env, labels = row.texts(), row.pairs(), row.pairs()
    (n_ports,) = row.fields("u")
    ports = []
    for _ in range(n_ports):
        number, protocol, port_name = row.fields("ias")
        ports.append(
            Port(
                container_port=number,
                protocol=read_enum(PortProtocol, protocol, f"{path}.protocol"),
                name=port_name,
            )
        )
    row.done()
    spec = WorkloadSpec(
        name=name,
        image=image,
        replicas=replicas,
        args=args,
        env=env,
        labels=labels,
        resources=Resources(cpu_millis=cpu, memory_bytes=memory),
        ports=ports,
    )
    return StoredWorkload(id=ident, spec=spec, version=version, created_index=created)


_INSTANCE_STATUS: dict[str, InstanceStatus] = {s.value: s for s in InstanceStatus}


def _instance_v1(value: Any, path: str, shared: _Shared | None = None) -> Instance:
    instance = _instance_read(value, path, shared)
    _no_nul(instance.id, path)
    _no_nul(instance.workload_id, path)
    if instance.node_id is not None:
        _no_nul(instance.node_id, path)
    return instance


def _instance_read(value: Any, path: str, shared: _Shared | None) -> Instance:
    # As for workloads: a fast path for well-formed rows, the checked path names the problem.
    if type(value) is list and len(value) == 7:
        ident, workload_id, node_id, status, message, version, created = value
        if (
            type(ident) is str
            and type(workload_id) is str
            and (node_id is None or type(node_id) is str)
            and type(status) is str
            and status in _INSTANCE_STATUS
            and type(message) is str
            and type(version) is int
            and version >= 0
            and type(created) is int
            and created >= 0
        ):
            if shared is not None:  # the same strings as the workload's, the node's, ...
                texts = shared.texts
                workload_id = texts.setdefault(workload_id, workload_id)
                if node_id is not None:
                    node_id = texts.setdefault(node_id, node_id)
                message = texts.setdefault(message, message)
            return Instance(
                id=ident,
                workload_id=workload_id,
                node_id=node_id,
                status=_INSTANCE_STATUS[status],
                message=message,
                version=version,
                created_index=created,
            )
    return _instance_checked(value, path)


def _instance_checked(value: Any, path: str) -> Instance:
    row = _Row(value, path)
    ident, workload_id, node_id, status, message, version, created = row.fields("ssoasuu")
    row.done()
    return Instance(
        id=ident,
        workload_id=workload_id,
        node_id=node_id,
        status=read_enum(InstanceStatus, status, f"{path}.status"),
        message=message,
        version=version,
        created_index=created,
    )


def _node_v1(value: Any, path: str) -> Node:
    row = _Row(value, path)
    ident, status, version, created, cpu, memory = row.fields("sauuii")
    addresses, labels = row.texts(), row.pairs()
    row.done()
    info = NodeInfo(
        id=ident,
        addresses=addresses,
        capacity=Resources(cpu_millis=cpu, memory_bytes=memory),
        labels=labels,
    )
    status = read_enum(NodeStatus, status, f"{path}.status")
    _no_nul(ident, path)
    return Node(info=info, status=status, version=version, created_index=created)


def _session_v1(value: Any, path: str) -> Session:
    row = _Row(value, path)
    client_id, last_index, last_ms, max_seq, n_responses = row.fields("suuuu")
    # What a command could make (s14-review2): the LMDB journal keys a session's responses
    # by ``client id + NUL + seq`` and deletes them as one range, so an id holding a NUL
    # would put its rows inside another session's range, and a seq 0 stays stored after
    # memory let it go (the env then refused to open).
    problem = id_problem("client id", client_id)
    if problem:
        raise DecodeError(f"{path}: {problem}")
    responses = {}
    for _ in range(n_responses):
        seq, response = row.fields("ua")
        if seq < 1:
            raise DecodeError(f"{path}: seq {seq} is below 1")
        if seq in responses:
            raise DecodeError(f"{path}: seq {seq} appears twice")
        responses[seq] = response_from_plain(response, f"{path}.response[{seq}]")
    row.done()
    return Session(
        client_id=client_id,
        last_index=last_index,
        last_ms=last_ms,
        max_seq=max_seq,
        responses=responses,
    )


def _token_v1(value: Any, path: str) -> Token:
    row = _Row(value, path)
    ident, name, created_index, created_ms, secret_hash = row.fields("ssuus")
    roles = row.texts()
    row.done()
    return Token(
        id=ident,
        name=name,
        roles=roles,
        secret_hash=secret_hash,
        created_index=created_index,
        created_ms=created_ms,
    )


def _owners_v1(value: Any, sessions: list[Session]) -> None:
    row = _Row(value, "session_owners")
    if len(row.items) % 2:
        raise DecodeError("session_owners: odd number of items")
    flat = row.fields("ss" * (len(row.items) // 2))
    by_id = {s.client_id: s for s in sessions}
    for client_id, owner in zip(flat[::2], flat[1::2], strict=True):
        session = by_id.get(client_id)
        if session is None or session.owner:
            raise DecodeError(f"session_owners: {client_id!r} is unknown or listed twice")
        session.owner = owner


def _balances_v1(value: Any) -> list[tuple[str, int]]:
    row = _Row(value, "balances")
    if len(row.items) % 2:
        raise DecodeError("balances: odd number of items")
    flat = row.fields("su" * (len(row.items) // 2))
    balances = list(zip(flat[::2], flat[1::2], strict=True))
    if len({peer for peer, _ in balances}) != len(balances):
        raise DecodeError("balances: a peer appears twice")
    return balances


def _opt_uint(value: Any, path: str) -> int | None:
    return None if value is None else read_uint(value, path)


def _policy_v1(value: Any) -> SessionPolicy:
    m = read_map(
        value,
        "policy",
        ("window", "max_sessions", "ttl_entries", "ttl_ms"),
        ("max_sessions_per_owner",),
    )
    per_owner = m.get("max_sessions_per_owner")
    try:
        return SessionPolicy(
            window=read_uint(m["window"], "policy.window"),
            max_sessions=read_uint(m["max_sessions"], "policy.max_sessions"),
            ttl_entries=_opt_uint(m["ttl_entries"], "policy.ttl_entries"),
            ttl_ms=_opt_uint(m["ttl_ms"], "policy.ttl_ms"),
            **(
                {}
                if per_owner is None
                else {
                    "max_sessions_per_owner": read_uint(per_owner, "policy.max_sessions_per_owner")
                }
            ),
        )
    except ValueError as e:  # the policy's own validators
        raise DecodeError(f"policy: {e}") from None


class RowStream:
    """Rows read one at a time instead of a decoded list: a snapshot reader that streams the
    big row lists (``univrs.storage.sm_tables.stage_snapshot``) puts one in the plain data in
    place of a list. ``rows()`` gives the decoded rows in order, once per call."""

    def __init__(self, count: int, rows: Callable[[], Iterator[Any]]) -> None:
        self.count = count
        self.rows = rows


def _each(value: Any, path: str, read: Callable[[Any, str], Any]) -> list[Any]:
    return [read(item, f"{path}[{n}]") for n, item in enumerate(read_list(value, path))]


def _each_row(value: Any, path: str, read: Callable[[Any, str], Any]) -> Any:
    """``_each`` for the object rows, lazily when they are a ``RowStream``; ``StagedRows``
    (in the tables already) as they are. A check's stop (``check_stop``) is polled every
    ``STOP_EVERY`` rows of a list (s14-small: a restore in memory stops within a block, as
    the LMDB staging does; before, only after the whole state was built)."""
    if isinstance(value, StagedRows):
        return value
    if isinstance(value, RowStream):
        return (read(item, f"{path}[{n}]") for n, item in enumerate(value.rows()))
    stop = check_stop.get()
    if stop is None:
        return _each(value, path, read)
    items = read_list(value, path)
    rows: list[Any] = []
    for start in range(0, len(items), STOP_EVERY):
        if stop():
            raise CheckStopped
        block = items[start : start + STOP_EVERY]
        rows.extend(read(item, f"{path}[{n}]") for n, item in enumerate(block, start))
    return rows


def _restore_v1(m: dict[str, Any], objects: Objects | None = None) -> ClusterStateMachine:
    # Shared sub-values save memory in a state kept in memory; rows that stream into a
    # persistent store are encoded at once, and the cache would only grow (every id in it).
    streamed = any(
        isinstance(m[key], RowStream | StagedRows) for key in ("workloads", "instances", "nodes")
    )
    shared = None if streamed else _Shared()
    sessions = _each(m["sessions"], "sessions", _session_v1)
    if len({s.client_id for s in sessions}) != len(sessions):
        raise DecodeError("sessions: a client id appears twice")
    if "session_owners" in m:
        _owners_v1(m["session_owners"], sessions)
    tokens = _each(m.get("tokens", []), "tokens", _token_v1)
    if len({t.id for t in tokens}) != len(tokens):
        raise DecodeError("tokens: a token id appears twice")
    bootstrapped = m.get("tokens_bootstrapped", False)
    if type(bootstrapped) is not bool:
        fail("tokens_bootstrapped", "a boolean", bootstrapped)
    return ClusterStateMachine.from_parts(
        policy=_policy_v1(m["policy"]),
        last_index=read_uint(m["last_index"], "last_index"),
        last_term=read_uint(m["last_term"], "last_term"),
        clock_ms=read_uint(m["clock_ms"], "clock_ms"),
        workloads=_each_row(
            m["workloads"], "workloads", functools.partial(_workload_v1, shared=shared)
        ),
        instances=_each_row(
            m["instances"], "instances", functools.partial(_instance_v1, shared=shared)
        ),
        nodes=_each_row(m["nodes"], "nodes", _node_v1),
        balances=_balances_v1(m["balances"]),
        sessions=sessions,
        tokens=tokens,
        tokens_bootstrapped=bootstrapped,
        revision=read_uint(m["last_revision"], "last_revision") if "last_revision" in m else None,
        objects=objects,
    )


# Snapshot format version -> (top-level keys, reader). Never remove a row: a newer node must
# read every older snapshot.
_READERS: dict[
    int,
    tuple[
        tuple[str, ...],
        tuple[str, ...],
        Callable[[dict[str, Any], Objects | None], ClusterStateMachine],
    ],
] = {
    1: (TOP_KEYS, OPTIONAL_KEYS, _restore_v1),
}


def restore_plain(plain: Any, objects: Objects | None = None) -> ClusterStateMachine:
    r"""A state machine from snapshot plain data of any known format version, in ``objects``
    (empty tables; default: new ones). The object row lists may be ``RowStream``\ s.

    Raises ``DecodeError`` for malformed data, an unknown version or broken invariants
    (duplicates, an instance of a missing workload or on a missing node, a bad ledger)."""
    if type(plain) is not dict:
        fail("snapshot", "a map", plain)
    if plain.get("format") != SNAPSHOT_FORMAT:
        fail("snapshot.format", repr(SNAPSHOT_FORMAT), plain.get("format"))
    version = plain.get("version")
    row = _READERS.get(version) if type(version) is int else None
    if row is None:
        fail("snapshot.version", f"one of {sorted(_READERS)}", version)
    keys, optional, reader = row
    with gc_paused():
        return reader(read_map(plain, "snapshot", keys, optional), objects)
