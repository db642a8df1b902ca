"""Snapshot and restore of the whole state as plain data, and a deterministic state digest.

Format (``SNAPSHOT_FORMAT_VERSION`` = 1): a map with the header keys

    format        "univrs-sm-snapshot"
    version       1
    last_index    int   last applied log index
    last_term     int   its term
    clock_ms      int   largest leader-stamped time applied
    policy        {"window": int, "max_sessions": int, "ttl_entries": int|None, "ttl_ms": int|None}

and the bulk data as *rows*: one flat list per object, fields in a fixed order, each
variable-length group written as its length followed by its items (``n, x1, ..., xn``). Rows
cost one container per object instead of ten (cbor2 spends most of its time per container:
the snapshot of 100,000 workloads takes a fraction of a second):

    workloads  [[id, version, created_index, name, image, replicas, cpu_millis, memory_bytes,
                 n, arg*n, n, (env key, value)*n, n, (label key, value)*n,
                 n, (port, protocol, port name)*n], ...]
    instances  [[id, workload_id, node_id|None, status, message, version, created_index], ...]
    nodes      [[id, status, version, created_index, cpu_millis, memory_bytes,
                 n, address*n, n, (label key, value)*n], ...]
    balances   [peer, amount, peer, amount, ...]            (positive amounts only)
    sessions   [[client_id, last_index, last_ms, max_seq, n, (seq, response)*n], ...]

Keys added since the first release of version 1, written only when not empty (not the default),
read when present; a node that predates them refuses a snapshot that has one (an unknown key)
rather than dropping what it does not understand:

    policy.max_sessions_per_owner  int
    session_owners      [client_id, owner, ...]     (sessions whose owner is not "")
    tokens              [[id, name, created_index, created_ms, secret_hash, n, role*n], ...]
    tokens_bootstrapped bool
    last_revision       int   the last revision, when it is not last_index (batch entries:
                              univrs/sm/state.py); absent means last_index

Responses use the map form of ``univrs.sm.plain``. Rows are in storage order (id order for
workloads, instances and nodes: their tables are ordered by key; the reader accepts any order,
so version 1 is unchanged), which is the
same on every replica that applied the same log and is preserved by restore, so replicas
produce identical snapshots; the session order is meaningful (least recently active first, the
expiry order). ``restore_plain`` reads every version listed in ``_READERS``: a newer node adds
a reader for its new version and keeps the old ones, so it can still read an older snapshot.

``state_digest`` hashes a canonical form (rows sorted by id, JSON) so it depends only on the
state's contents, not on the order in which objects were created.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
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
from univrs.sm.objects import StoredWorkload
from univrs.sm.plain import (
    fail,
    read_enum,
    read_list,
    read_map,
    read_uint,
    response_from_plain,
    response_to_plain,
)
from univrs.sm.sessions import Session, SessionPolicy
from univrs.sm.state import ClusterStateMachine
from univrs.sm.tokens import Token

SNAPSHOT_FORMAT = "univrs-sm-snapshot"
SNAPSHOT_FORMAT_VERSION = 1

_TOP_KEYS = (
    "format",
    "version",
    "last_index",
    "last_term",
    "clock_ms",
    "policy",
    "workloads",
    "instances",
    "nodes",
    "balances",
    "sessions",
)
_OPTIONAL_KEYS = ("session_owners", "tokens", "tokens_bootstrapped", "last_revision")
_DEFAULT_PER_OWNER = SessionPolicy().max_sessions_per_owner


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building or reading 10^5 containers: none of them form
    cycles, and CPython would otherwise rescan the whole heap many times (5x slower)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ------------------------------------------------------------------ writing


def _workload_row(w: StoredWorkload) -> list[Any]:
    s, r = w.spec, w.spec.resources
    row: list[Any] = [
        w.id,
        w.version,
        w.created_index,
        s.name,
        s.image,
        s.replicas,
        r.cpu_millis,
        r.memory_bytes,
        len(s.args),
        *s.args,
        len(s.env),
        *chain.from_iterable(s.env),
        len(s.labels),
        *chain.from_iterable(s.labels),
        len(s.ports),
    ]
    for p in s.ports:
        row += (p.container_port, p.protocol.value, p.name)
    return row


def _instance_row(i: Instance) -> list[Any]:
    return [i.id, i.workload_id, i.node_id, i.status.value, i.message, i.version, i.created_index]


def _node_row(n: Node) -> list[Any]:
    info, c = n.info, n.info.capacity
    return [
        info.id,
        n.status.value,
        n.version,
        n.created_index,
        c.cpu_millis,
        c.memory_bytes,
        len(info.addresses),
        *info.addresses,
        len(info.labels),
        *chain.from_iterable(info.labels),
    ]


def _session_row(s: Session) -> list[Any]:
    row: list[Any] = [s.client_id, s.last_index, s.last_ms, s.max_seq, len(s.responses)]
    for seq, response in s.responses.items():
        row += (seq, response_to_plain(response))
    return row


def _token_row(t: Token) -> list[Any]:
    return [t.id, t.name, t.created_index, t.created_ms, t.secret_hash, len(t.roles), *t.roles]


def snapshot_plain(sm: ClusterStateMachine) -> dict[str, Any]:
    """The whole state as plain data (see the module docstring for the format)."""
    return plain_from_parts(
        policy=sm.policy,
        last_index=sm.last_applied_index,
        last_term=sm.last_applied_term,
        clock_ms=sm.clock_ms,
        workloads=sm.stored_workloads(),
        instances=sm.stored_instances(),
        nodes=sm.stored_nodes(),
        balances=sm.ledger_items(),
        sessions=list(sm.stored_sessions()),
        tokens=sm.stored_tokens(),
        tokens_bootstrapped=sm.tokens_bootstrapped,
        revision=sm.revision,
    )


def plain_from_parts(
    *,
    policy: SessionPolicy,
    last_index: int,
    last_term: int,
    clock_ms: int,
    workloads: Iterable[StoredWorkload],
    instances: Iterable[Instance],
    nodes: Iterable[Node],
    balances: Iterable[tuple[str, int]],
    sessions: list[Session],
    tokens: Iterable[Token] = (),
    tokens_bootstrapped: bool = False,
    revision: int | None = None,
) -> dict[str, Any]:
    """Snapshot plain data from the parts ``ClusterStateMachine.from_parts`` takes, in their
    order: what ``snapshot_plain`` returns for the state machine they make, without building
    it (the runtime encodes a captured view this way, off the event loop)."""
    with gc_paused():
        plain: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_FORMAT_VERSION,
            "last_index": last_index,
            "last_term": last_term,
            "clock_ms": clock_ms,
            "policy": {
                "window": policy.window,
                "max_sessions": policy.max_sessions,
                "ttl_entries": policy.ttl_entries,
                "ttl_ms": policy.ttl_ms,
            },
            "workloads": [_workload_row(w) for w in workloads],
            "instances": [_instance_row(i) for i in instances],
            "nodes": [_node_row(n) for n in nodes],
            "balances": list(chain.from_iterable(balances)),
            "sessions": [_session_row(s) for s in sessions],
        }
        # The later keys only when they say something: a state that uses none of them has
        # the same snapshot (and digest) as before they existed.
        if policy.max_sessions_per_owner != _DEFAULT_PER_OWNER:
            plain["policy"]["max_sessions_per_owner"] = policy.max_sessions_per_owner
        owners = [(s.client_id, s.owner) for s in sessions if s.owner]
        if owners:
            plain["session_owners"] = list(chain.from_iterable(owners))
        token_rows = [_token_row(t) for t in tokens]
        if token_rows:
            plain["tokens"] = token_rows
        if tokens_bootstrapped:
            plain["tokens_bootstrapped"] = True
        if revision is not None and revision != last_index:
            plain["last_revision"] = revision
        return plain


# ------------------------------------------------------------------ reading


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
    builds each once, and the restored state takes less memory."""

    __slots__ = ("pairs", "ports", "resources")

    def __init__(self) -> None:
        self.resources: dict[tuple[int, int], Resources] = {}
        self.ports: dict[tuple[Any, ...], tuple[Port, ...]] = {}
        self.pairs: dict[tuple[str, ...], Pairs] = {}

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
    return fast if fast is not None else _workload_checked(value, path)


_JUST_STR = frozenset({str})


def _workload_fast(v: list[Any], shared: _Shared) -> StoredWorkload | None:
    try:
        ident, version, created, name, image, replicas, cpu, memory, n_args = v[:9]
        if not (
            type(ident) is str
            and type(version) is int
            and version >= 0
            and type(created) is int
            and created >= 0
            and type(name) is str
            and type(image) is str
            and type(replicas) is int
            and type(cpu) is int
            and type(memory) is int
            and type(n_args) is int
            and n_args >= 0
        ):
            return None
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
    spec = WorkloadSpec(
        name=name,
        image=image,
        replicas=replicas,
        args=tuple(args),
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


def _instance_v1(value: Any, path: str) -> Instance:
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
    return Node(info=info, status=status, version=version, created_index=created)


def _session_v1(value: Any, path: str) -> Session:
    row = _Row(value, path)
    client_id, last_index, last_ms, max_seq, n_responses = row.fields("suuuu")
    responses = {}
    for _ in range(n_responses):
        seq, response = row.fields("ua")
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


def _each(value: Any, path: str, read: Callable[[Any, str], Any]) -> list[Any]:
    return [read(item, f"{path}[{n}]") for n, item in enumerate(read_list(value, path))]


def _restore_v1(m: dict[str, Any]) -> ClusterStateMachine:
    shared = _Shared()
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
        workloads=_each(
            m["workloads"], "workloads", functools.partial(_workload_v1, shared=shared)
        ),
        instances=_each(m["instances"], "instances", _instance_v1),
        nodes=_each(m["nodes"], "nodes", _node_v1),
        balances=_balances_v1(m["balances"]),
        sessions=sessions,
        tokens=tokens,
        tokens_bootstrapped=bootstrapped,
        revision=read_uint(m["last_revision"], "last_revision") if "last_revision" in m else None,
    )


# Snapshot format version -> (top-level keys, reader). Never remove a row: a newer node must
# read every older snapshot.
_READERS: dict[
    int,
    tuple[tuple[str, ...], tuple[str, ...], Callable[[dict[str, Any]], ClusterStateMachine]],
] = {
    1: (_TOP_KEYS, _OPTIONAL_KEYS, _restore_v1),
}


def restore_plain(plain: Any) -> ClusterStateMachine:
    """A state machine from snapshot plain data of any known format version.

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
        return reader(read_map(plain, "snapshot", keys, optional))


# ------------------------------------------------------------------ digest


def _first(row: list[Any]) -> Any:
    return row[0]


def state_digest(sm: ClusterStateMachine) -> str:
    """``"sha256:<hex>"`` of a canonical encoding of the state; equal states, equal digests.

    Canonical: the snapshot plain data with workload, instance and node rows and balances
    sorted by id (sessions keep their order, which is part of the state), as JSON with sorted
    keys and no whitespace. Stdlib only, so any replica (or tool) can recompute it."""
    with gc_paused():
        plain = snapshot_plain(sm)
        balances = plain["balances"]
        pairs = sorted(zip(balances[::2], balances[1::2], strict=True))
        plain["balances"] = list(chain.from_iterable(pairs))
        for key in ("workloads", "instances", "nodes"):
            plain[key].sort(key=_first)
        text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()
