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

Files: this module writes snapshots (``snapshot_plain``, ``plain_from_parts``) and digests
them; ``snapshot_read.py`` reads them (``restore_plain``, re-exported here);
``snapshot_format.py`` holds the format's names and ``gc_paused``, shared by both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from itertools import chain, islice
from typing import Any

from univrs.sm.model import Instance, Node
from univrs.sm.objects import StoredWorkload
from univrs.sm.plain import response_to_plain
from univrs.sm.sessions import Session, SessionPolicy
from univrs.sm.snapshot_format import (
    DEFAULT_PER_OWNER,
    SNAPSHOT_FORMAT,
    SNAPSHOT_FORMAT_VERSION,
    gc_paused,
)
from univrs.sm.snapshot_read import (
    _instance_checked,
    _instance_v1,
    _node_v1,
    _Row,
    _Shared,
    _workload_checked,
    _workload_fast,
    _workload_v1,
    restore_plain,
)
from univrs.sm.state import ClusterStateMachine
from univrs.sm.tokens import Token

# The reading half lives in snapshot_read.py; its names stay importable from here (the
# storage's LMDB tables and the tests use the row readers).
__all__ = [
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_FORMAT_VERSION",
    "_Row",
    "_Shared",
    "_instance_checked",
    "_instance_v1",
    "_node_v1",
    "_workload_checked",
    "_workload_fast",
    "_workload_v1",
    "gc_paused",
    "plain_from_parts",
    "restore_plain",
    "snapshot_plain",
    "state_digest",
]


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
        if policy.max_sessions_per_owner != DEFAULT_PER_OWNER:
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


DIGEST_BATCH = 1024  # rows encoded per ``hashlib`` update of ``streamed_digest``


def streamed_digest(plain: dict[str, Any], rows: dict[str, Iterable[Any]]) -> str:
    """``state_digest`` of the state whose plain data is ``plain`` with the row lists named in
    ``rows`` given instead as iterables of rows **in id order** (the tables' order), without
    building the text or the row lists: the same JSON, hashed a batch of rows at a time
    (a JSON array is ``[`` + its items joined by ``,`` + ``]``). Memory: a batch of rows."""
    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode
    plain = dict(plain)
    balances = plain["balances"]
    pairs = sorted(zip(balances[::2], balances[1::2], strict=True))
    plain["balances"] = list(chain.from_iterable(pairs))
    h = hashlib.sha256()
    h.update(b"{")
    for n, key in enumerate(sorted(plain)):
        h.update((("," if n else "") + encode(key) + ":").encode("ascii"))
        if key not in rows:
            h.update(encode(plain[key]).encode("ascii"))
            continue
        h.update(b"[")
        iterator, sep = iter(rows[key]), ""
        while batch := [encode(row) for row in islice(iterator, DIGEST_BATCH)]:
            h.update((sep + ",".join(batch)).encode("ascii"))
            sep = ","
        h.update(b"]")
    h.update(b"}")
    return "sha256:" + h.hexdigest()
