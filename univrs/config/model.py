"""The node's configuration as a value: ``NodeConfig`` (and ``BootstrapNode``), its defaults
(the embedded single-node mode) and the cross-key rules checked at construction.

Timings are configured in milliseconds; the core counts ticks. ``choose_tick_ms`` picks one
tick length that divides the timings exactly when it can, and ``NodeConfig.raft_config()``
converts them into a ``univrs.raft.ready.RaftConfig``. Reading TOML and flags into a
``NodeConfig`` is ``univrs.config.load``.
"""

from __future__ import annotations

import ipaddress
import math
import pathlib
import re

import attrs

from univrs.errors import ConfigError
from univrs.net.address import WILDCARD_HOSTS, split_host_port
from univrs.net.tls import TlsFiles
from univrs.raft.ready import RaftConfig

MIN_PAYLOAD_SIZE = 128 * 1024
MAX_PAYLOAD_SIZE = 1 << 30
ENVELOPE_HEADROOM = 64 * 1024  # frame bytes reserved for a message's fields around its data
DEFAULT_RAFT_HOST = "127.0.0.1"
LAZY_COMMIT_NOTICE_BYTES = 1024  # RaftConfig.lazy_commit_notice_bytes of every node
INITIAL_CLUSTER_STATES = ("new", "existing")
STATE_BACKENDS = ("memory", "lmdb")  # [state] backend
MAX_INLINE_WRITE_BYTES = 1 << 20  # raft.inline_write_bytes at most (a write blocks the loop)
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@attrs.frozen(kw_only=True)
class BootstrapNode:
    """One member of the initial cluster: node id, raft address and (optional) API address."""

    id: str
    addr: str
    api: str | None = None


@attrs.frozen(kw_only=True)
class NodeConfig:
    """Everything a node needs to start. The defaults are the embedded single-node mode.

    Construction validates the cross-key rules (timing order, addresses, bootstrap set) and
    raises ConfigError; ``load_config`` also checks key names and types first.
    """

    node_id: str = "node-1"
    # None: the data dir's own id; at bootstrap a new one: random for a single node, and for a
    # static multi-node bootstrap derived from ``initial_cluster_token`` (so every member agrees).
    cluster_id: str | None = None
    # etcd's initial-cluster-token: a value unique to one cluster, the same on every initial
    # member, from which a multi-node bootstrap derives the cluster id (never from the member
    # list alone: two clusters of the same members must not share an id). Required to
    # bootstrap several members without an explicit cluster_id. Not a credential.
    initial_cluster_token: str | None = None
    data_dir: pathlib.Path = pathlib.Path("./univrs-data")
    raft_addr: str = "127.0.0.1:7000"  # where the raft listener binds (and the /client path)
    api_addr: str = "127.0.0.1:8000"  # the REST API
    heartbeat_interval_ms: int = 150
    election_timeout_min_ms: int = 300  # invariant: heartbeat < min <= max
    election_timeout_max_ms: int = 500
    # Lease reads (docs/performance.md, "Lease reads"): off by default. On, a leader answers
    # reads of consistency "lease" from its lease (no heartbeat round), linearizable only while
    # no two nodes' clocks drift apart by more than ``lease_drift_ms`` within
    # ``election_timeout_min_ms`` and no process stalls unnoticed for longer.
    read_lease: bool = False
    lease_drift_ms: int = 50
    snapshot_threshold: int = 10_000  # entries applied since the last snapshot
    snapshot_max_chunk_size: int = 1_048_576  # bytes of snapshot data per InstallSnapshot
    # Log entries kept behind a snapshot, so slightly-behind followers catch up from the log.
    snapshot_trailing_entries: int = 5_000
    # The stored snapshot is read whole and checked this often (and soon after start), at
    # most ``snapshot_scrub_rate`` bytes per second; 0: never (docs/storage.md, "Guarantees").
    snapshot_scrub_interval_ms: int = 21_600_000
    snapshot_scrub_rate: int = 33_554_432
    max_payload_size: int = 4_194_304  # largest websocket frame sent or accepted
    # The largest snapshot accepted from a leader (RaftConfig.max_snapshot_bytes): a partial
    # one is held in memory, one at a time, so this bounds that memory too.
    max_snapshot_bytes: int = 1 << 30
    # Watches (docs/orchestrator.md): change events kept in memory for watchers, and how many
    # watchers this node serves at once.
    watch_history: int = 10_000
    watch_max_watchers: int = 1_000
    # Node liveness: a registered machine that has not heartbeated for this long is marked
    # down by the leader (a new leader first waits this long).
    node_ttl_ms: int = 10_000
    # The reconciler (docs/orchestrator.md): on by default, as a scheduler is: the leader
    # reconciles on every change and at least this often; 0 turns it off (instances are then
    # created by clients).
    reconcile_resync_ms: int = 10_000
    # Where the state machine lives ([state] backend, docs/state-at-scale.md): "lmdb" (the
    # default: data_dir/state.lmdb, resumed after its applied index) or "memory" (restored
    # from the snapshot and the log at every start).
    state_backend: str = "lmdb"
    # Batch entries (docs/runtime.md, "Batch entries"): the leader packs concurrent writes into
    # one log entry (payload version 2). On by default: the leader packs them only while
    # every member announced that it applies them (univrs/runtime/capabilities.py).
    batch_entries: bool = True
    # After a batch of writes applies, the leader's next batch waits up to this long (and at
    # most that batch's commit time) for the writers it answered to send their next writes,
    # so closed-loop clients make whole batches, not two alternating halves (docs/runtime.md,
    # "Proposal batching"; docs/performance.md, Round 13). 0: the next batch goes at once.
    batch_gather_ms: int = 50
    # A storage write of entries up to this many bytes runs on the node's event loop rather
    # than its storage thread (docs/runtime.md; docs/performance.md, Round 24): it saves the
    # thread's hand-offs, which at one client cost more than the write. 0: every write on
    # the thread.
    inline_write_bytes: int = 16384
    bootstrap: tuple[BootstrapNode, ...] = ()  # empty: no bootstrap from this file
    # What an empty data dir means (etcd's initial-cluster-state): "new" bootstraps a new
    # cluster (unless a reachable bootstrap peer shows that this id already served in it);
    # "existing" never bootstraps: the node waits to be joined (`univrs cluster join`).
    initial_cluster_state: str = "new"
    # Local dial overrides: reach peer <id> at this address instead of its advertised one
    # (a fault-injecting proxy in chaos runs, or a NAT / tunnel). Never replicated.
    dial: tuple[tuple[str, str], ...] = ()
    # [auth] enabled: every API request needs a token with the operation's role (docs/security.md)
    auth_enabled: bool = False
    # [limits] (docs/security.md, "Limits")
    max_body_bytes: int = 1_048_576  # largest REST request body read (413 beyond)
    max_json_depth: int = 32  # deepest JSON nesting accepted in a request body (400 beyond)
    max_connections_per_address: int = 256  # open REST / fast-protocol connections per address
    session_open_rate: float = 20.0  # session.open per second per token (or address) ...
    session_open_burst: int = 200  # ... with bursts up to this many
    quota_backend_bytes: int = 2 * 1024**3  # storage in use above which writes are refused
    # TLS on every listener and dial (docs/security.md); None: plaintext, which is allowed
    # only on loopback addresses unless ``insecure`` says the operator means it.
    tls: TlsFiles | None = None
    insecure: bool = False
    # The shared secret a joining node shows (``univrs cluster join --token``) and this node
    # checks when asked to add a member; None: only a node certificate (TLS) admits a joiner.
    join_token: str | None = None

    def __attrs_post_init__(self) -> None:
        problems = _semantic_problems(self)
        if problems:
            raise ConfigError("\n".join(problems))

    @property
    def tick_ms(self) -> int:
        """The length of one core tick in milliseconds (see ``choose_tick_ms``)."""
        return choose_tick_ms(
            self.heartbeat_interval_ms, self.election_timeout_min_ms, self.election_timeout_max_ms
        )

    def raft_config(self, *, tick_ms: int | None = None) -> RaftConfig:
        """The core's config: timings in ticks of ``tick_ms`` (default ``self.tick_ms``)."""
        tick = tick_ms if tick_ms is not None else self.tick_ms
        if tick < 1:
            raise ValueError(f"tick_ms must be positive, got {tick}")
        heartbeat = max(1, round(self.heartbeat_interval_ms / tick))
        low = max(heartbeat + 1, round(self.election_timeout_min_ms / tick))
        high = max(low, round(self.election_timeout_max_ms / tick))
        return RaftConfig(
            heartbeat_ticks=heartbeat,
            election_ticks_min=low,
            election_ticks_max=high,
            max_bytes_per_msg=min(RaftConfig().max_bytes_per_msg, self.max_payload_size // 2),
            snapshot_chunk_bytes=self.snapshot_max_chunk_size,
            max_snapshot_bytes=self.max_snapshot_bytes,
            # Without TLS a sender's id is its say-so: no leader traffic from unlisted ids
            # (docs/security.md, "Core refusals").
            unlisted_leaders=self.tls is not None,
            read_lease=self.read_lease,
            lease_drift_ticks=lease_drift_ticks(self.lease_drift_ms, tick),
            # Followers learn a small commit from the next append, or at the next tick
            # (univrs/raft/commit_notice.py; docs/performance.md, "Round 7").
            lazy_commit_notice_bytes=LAZY_COMMIT_NOTICE_BYTES,
            # A follower that appends reach needs no periodic heartbeat (univrs/raft/heartbeat.py
            # ``_heartbeat_may_wait``; docs/performance.md, "Round 15 (s15-beat)").
            skip_busy_heartbeats=True,
            # A read's ReadIndex round goes to a quorum's worth of voters, not all of them
            # (univrs/raft/read_only.py, "Narrow rounds"; docs/performance.md, "Round 16").
            narrow_read_rounds=True,
        )

    def dial_addresses(self, advertised: dict[str, str]) -> dict[str, str]:
        """The addresses to dial peers at: ``advertised`` with this node's overrides applied."""
        return {**advertised, **{nid: addr for nid, addr in self.dial if nid in advertised}}

    def bootstrap_addresses(self) -> dict[str, str]:
        """Node id -> raft address of the bootstrap members (empty without bootstrap)."""
        return {n.id: n.addr for n in self.bootstrap}


def lease_drift_ticks(drift_ms: int, tick_ms: int) -> int:
    """The drift bound in whole ticks, rounded up (a bound is never rounded down)."""
    return -(-max(0, drift_ms) // tick_ms)


def choose_tick_ms(heartbeat_ms: int, election_min_ms: int, election_max_ms: int) -> int:
    """A tick length for these timings.

    The largest divisor of all three that lies in 10..50 ms, so the timings convert to ticks
    exactly (defaults 150/300/500 ms give 50 ms: 3, 6 and 10 ticks). When no such divisor
    exists, a third of the heartbeat, clamped to 1..50 ms, and the timings round to ticks.
    """
    g = math.gcd(heartbeat_ms, election_min_ms, election_max_ms)
    for d in range(min(50, g), 9, -1):
        if g % d == 0:
            return d
    return max(1, min(50, heartbeat_ms // 3))


# ------------------------------------------------------------------------- validation


def valid_node_id(node_id: str) -> bool:
    """Whether ``node_id`` is one a node may have (``raft.node_id``'s rule): 1-64 letters,
    digits, '.', '_' or '-', starting with a letter or digit."""
    return _ID_RE.fullmatch(node_id) is not None


def is_loopback(addr: str) -> bool:
    """Whether ``host:port`` binds only this machine's loopback interface."""
    try:
        host = split_host_port(addr, allow_port_zero=True)[0]
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _semantic_problems(c: NodeConfig) -> list[str]:
    problems: list[str] = []
    for nid, addr in c.dial:
        _check_addr(f"raft.dial.{nid}", addr, problems)
    if not 0 <= c.batch_gather_ms <= 1000:
        problems.append(f"raft.batch_gather_ms: {c.batch_gather_ms} must be 0-1000 (0: off)")
    if not 0 <= c.inline_write_bytes <= MAX_INLINE_WRITE_BYTES:
        problems.append(
            f"raft.inline_write_bytes: {c.inline_write_bytes} must be "
            f"0-{MAX_INLINE_WRITE_BYTES} (0: every write on the storage thread)"
        )
    if c.reconcile_resync_ms < 0:
        problems.append(
            f"raft.reconcile_resync_ms: {c.reconcile_resync_ms} must be >= 0 (0: no reconciler)"
        )
    if c.node_ttl_ms < 0:
        problems.append(f"raft.node_ttl_ms: {c.node_ttl_ms} must be >= 0 (0: no liveness)")
    if c.snapshot_scrub_interval_ms < 0:
        problems.append(
            f"raft.snapshot_scrub_interval_ms: {c.snapshot_scrub_interval_ms} must be >= 0 "
            "(0: never)"
        )
    if c.snapshot_trailing_entries < 0:
        problems.append(
            f"raft.snapshot_trailing_entries: {c.snapshot_trailing_entries} must be >= 0"
        )
    if c.initial_cluster_state not in INITIAL_CLUSTER_STATES:
        problems.append(
            f"raft.initial_cluster_state: {c.initial_cluster_state!r} must be one of "
            + ", ".join(repr(s) for s in INITIAL_CLUSTER_STATES)
        )
    if c.state_backend not in STATE_BACKENDS:
        problems.append(
            f"state.backend: {c.state_backend!r} must be one of "
            + ", ".join(repr(s) for s in STATE_BACKENDS)
        )
    if c.initial_cluster_token is not None and not c.initial_cluster_token.strip():
        problems.append("raft.initial_cluster_token: must not be empty")
    for key, value in (("raft.node_id", c.node_id), ("raft.cluster_id", c.cluster_id)):
        if value is not None and not _ID_RE.fullmatch(value):
            problems.append(
                f"{key}: {value!r} must be 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
    positive = {
        "raft.heartbeat_interval_ms": c.heartbeat_interval_ms,
        "raft.election_timeout_min_ms": c.election_timeout_min_ms,
        "raft.election_timeout_max_ms": c.election_timeout_max_ms,
        "raft.snapshot_threshold": c.snapshot_threshold,
        "raft.snapshot_max_chunk_size": c.snapshot_max_chunk_size,
        "raft.snapshot_scrub_rate": c.snapshot_scrub_rate,
        "raft.max_snapshot_bytes": c.max_snapshot_bytes,
        "raft.watch_history": c.watch_history,
        "raft.watch_max_watchers": c.watch_max_watchers,
    }
    positive.update(
        {
            "limits.max_body_bytes": c.max_body_bytes,
            "limits.max_json_depth": c.max_json_depth,
            "limits.max_connections_per_address": c.max_connections_per_address,
            "limits.session_open_burst": c.session_open_burst,
            "limits.quota_backend_bytes": c.quota_backend_bytes,
        }
    )
    if not c.session_open_rate > 0:
        problems.append(f"limits.session_open_rate: must be above 0, got {c.session_open_rate}")
    for name, number in positive.items():
        if number < 1:
            problems.append(f"{name}: must be a positive integer, got {number}")
    if c.election_timeout_min_ms <= c.heartbeat_interval_ms:
        problems.append(
            f"raft.election_timeout_min_ms: {c.election_timeout_min_ms} must be above "
            f"raft.heartbeat_interval_ms ({c.heartbeat_interval_ms}), or followers time out "
            "between heartbeats"
        )
    if c.lease_drift_ms < 0:
        problems.append(f"raft.lease_drift_ms: {c.lease_drift_ms} must be >= 0")
    elif c.read_lease and c.election_timeout_min_ms > c.heartbeat_interval_ms:
        tick = c.tick_ms
        low = max(
            max(1, round(c.heartbeat_interval_ms / tick)) + 1,
            round(c.election_timeout_min_ms / tick),
        )  # election_ticks_min, as raft_config computes it
        if low - 1 - lease_drift_ticks(c.lease_drift_ms, tick) < 1:
            problems.append(
                f"raft.lease_drift_ms: {c.lease_drift_ms} leaves read_lease no lease: a lease "
                f"lasts election_timeout_min_ms ({c.election_timeout_min_ms}) less one tick "
                f"({tick} ms) less the drift bound rounded up to ticks; lower lease_drift_ms "
                f"below {(low - 2) * tick} or raise election_timeout_min_ms"
            )
    if c.election_timeout_max_ms < c.election_timeout_min_ms:
        problems.append(
            f"raft.election_timeout_max_ms: {c.election_timeout_max_ms} is below "
            f"raft.election_timeout_min_ms ({c.election_timeout_min_ms})"
        )
    if not MIN_PAYLOAD_SIZE <= c.max_payload_size <= MAX_PAYLOAD_SIZE:
        problems.append(
            f"raft.max_payload_size: {c.max_payload_size} is outside "
            f"{MIN_PAYLOAD_SIZE}-{MAX_PAYLOAD_SIZE} bytes"
        )
    elif c.snapshot_max_chunk_size > c.max_payload_size - ENVELOPE_HEADROOM:
        problems.append(
            f"raft.snapshot_max_chunk_size: {c.snapshot_max_chunk_size} does not fit in a frame "
            f"of raft.max_payload_size ({c.max_payload_size}) with {ENVELOPE_HEADROOM} bytes "
            "of headroom"
        )

    # Listen addresses may use port 0 (any free port: tests); peers' addresses may not.
    raft_ok = _check_addr("raft.raft_addr", c.raft_addr, problems, listen=True)
    api_ok = _check_addr("api.addr", c.api_addr, problems, listen=True)
    if raft_ok and api_ok:
        rh, rp = split_host_port(c.raft_addr, allow_port_zero=True)
        ah, ap = split_host_port(c.api_addr, allow_port_zero=True)
        if rp == ap != 0 and (rh == ah or rh in WILDCARD_HOSTS or ah in WILDCARD_HOSTS):
            problems.append(f"api.addr: {c.api_addr!r} uses the same port as raft.raft_addr")

    if c.bootstrap:
        _bootstrap_problems(c, raft_ok, problems)
    if c.join_token is not None and len(c.join_token) < 16:
        problems.append("join.token: use at least 16 characters (e.g. `openssl rand -hex 16`)")
    if c.tls is None and not c.insecure:
        exposed = [
            f"{key} {addr!r}"
            for key, addr in (("raft.raft_addr", c.raft_addr), ("api.addr", c.api_addr))
            if raft_ok and api_ok and not is_loopback(addr)
        ]
        if exposed:
            verb = "is" if len(exposed) == 1 else "are"
            problems.append(
                f"tls: {' and '.join(exposed)} {verb} reachable beyond this machine but no TLS is "
                "configured; give tls.ca_cert, tls.cert and tls.key (`univrs certs`), or run "
                "without TLS on purpose with tls.insecure = true (--insecure)"
            )
    return problems


def _check_addr(key: str, addr: str, problems: list[str], *, listen: bool = False) -> bool:
    try:
        split_host_port(addr, allow_port_zero=listen)
    except ValueError as exc:
        problems.append(f"{key}: {exc}")
        return False
    return True


def _bootstrap_problems(c: NodeConfig, raft_ok: bool, problems: list[str]) -> None:
    seen_ids: dict[str, int] = {}
    seen_addrs: dict[str, str] = {}  # every advertised address (raft and api) -> its key
    for i, node in enumerate(c.bootstrap):
        where = f"raft.bootstrap.nodes[{i}]"
        if not _ID_RE.fullmatch(node.id):
            problems.append(f"{where}.id: {node.id!r} is not a valid node id")
        if node.id in seen_ids:
            other = seen_ids[node.id]
            problems.append(f"{where}.id: duplicate id {node.id!r} (also nodes[{other}])")
        seen_ids.setdefault(node.id, i)
        for field, address in (("addr", node.addr), ("api", node.api)):
            if address is None:
                continue
            _check_addr(f"{where}.{field}", address, problems)
            if address in seen_addrs:
                problems.append(
                    f"{where}.{field}: duplicate address {address!r} (also {seen_addrs[address]})"
                )
            seen_addrs.setdefault(address, f"nodes[{i}].{field}")
    own = next((n for n in c.bootstrap if n.id == c.node_id), None)
    if own is None:
        listed = ", ".join(repr(n.id) for n in c.bootstrap)
        problems.append(f"raft.node_id: {c.node_id!r} is not among raft.bootstrap.nodes ({listed})")
        return
    if raft_ok and not _listens_on(c.raft_addr, own.addr):
        problems.append(
            f"raft.raft_addr: {c.raft_addr!r} differs from this node's bootstrap address "
            f"{own.addr!r}; use the same address (or a wildcard host on the same port)"
        )
    if own.api is not None and not _listens_on(c.api_addr, own.api):
        problems.append(
            f"api.addr: {c.api_addr!r} differs from this node's bootstrap api address "
            f"{own.api!r}; use the same address (or a wildcard host on the same port)"
        )


def _listens_on(listen: str, advertised: str) -> bool:
    """Whether a node bound to ``listen`` is reachable at ``advertised`` (port 0: tests, any).

    Unparsable addresses count as matching: they are reported on their own.
    """
    if listen == advertised:
        return True
    try:
        host, port = split_host_port(listen, allow_port_zero=True)
        wanted = split_host_port(advertised)[1]
    except ValueError:
        return True
    return port == 0 or (host in WILDCARD_HOSTS and port == wanted)
