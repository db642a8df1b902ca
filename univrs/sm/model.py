"""The objects the cluster state holds: workloads, instances, nodes (and their statuses).

Every stored object carries ``version``: the log index of the command that last changed it
(etcd ``mod_revision``, Kubernetes ``resourceVersion``), and ``created_index``: the log index of
the command that created it. Both come from the log, so every replica computes the same values.

Maps (env, labels) are kept as tuples of ``(key, value)`` pairs sorted by key, so values are
immutable, hashable and have one canonical form; constructors also accept a ``dict``.
Argument *ranges* are not checked here but by ``univrs.sm.validate`` when a command is applied,
so a bad argument becomes an ``invalid-argument`` response instead of an exception.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs

Pairs = tuple[tuple[str, str], ...]


def to_pairs(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> Pairs:
    """Canonical form of a string map: pairs sorted by key (duplicates are kept for validation)."""
    if type(value) is tuple:  # the common case (decoders, evolve): no re-packing
        ordered = tuple(sorted(value))
        # Already canonical: keep the caller's tuple, so restore's shared label sets stay
        # shared (one tuple for every workload with the same labels, not one each).
        return value if ordered == value else ordered
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((k, v) for k, v in items))


def to_str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    """A tuple of strings from any iterable of strings (order kept)."""
    return tuple(value)


def to_ports(value: Iterable[Port]) -> tuple[Port, ...]:
    """A tuple of ports from any iterable of ports."""
    return tuple(value)


class InstanceStatus(enum.StrEnum):
    """The life cycle of an instance. ``succeeded`` and ``failed`` are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"  # its node stopped reporting (set when the node goes down)


TERMINAL_INSTANCE_STATUSES = frozenset({InstanceStatus.SUCCEEDED, InstanceStatus.FAILED})


class NodeStatus(enum.StrEnum):
    """The health and schedulability of a node."""

    READY = "ready"
    NOT_READY = "not-ready"
    DRAINING = "draining"  # no new instances; existing ones keep running
    DOWN = "down"  # unreachable; its pending/running instances become unknown


# A node in one of these states accepts no new instances (CreateInstance, binding).
UNSCHEDULABLE_NODE_STATUSES = frozenset({NodeStatus.DRAINING, NodeStatus.DOWN})


class WorkloadPhase(enum.StrEnum):
    """A workload's health, derived from its instances (see ``WorkloadStatus``)."""

    READY = "ready"  # at least ``replicas`` instances are running
    PROGRESSING = "progressing"  # fewer running, none failed or unknown
    DEGRADED = "degraded"  # fewer running, and some failed or unknown


class PortProtocol(enum.StrEnum):
    """The transport protocol of a container port."""

    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


@attrs.frozen(kw_only=True, slots=True)
class Resources:
    """Amounts of compute: requests of a workload's instance, or a node's capacity."""

    cpu_millis: int = 0  # thousandths of a CPU core
    memory_bytes: int = 0


@attrs.frozen(kw_only=True, slots=True)
class Port:
    """A port an instance listens on."""

    container_port: int
    protocol: PortProtocol = PortProtocol.TCP
    name: str = ""


@attrs.frozen(kw_only=True, slots=True)
class WorkloadSpec:
    """What the user asks for: ``replicas`` instances of ``image`` with this configuration."""

    name: str
    image: str
    replicas: int = 1
    args: tuple[str, ...] = attrs.field(default=(), converter=to_str_tuple)
    env: Pairs = attrs.field(default=(), converter=to_pairs)
    labels: Pairs = attrs.field(default=(), converter=to_pairs)
    resources: Resources = Resources()
    ports: tuple[Port, ...] = attrs.field(default=(), converter=to_ports)


_SPEC_FIELDS = tuple(a.name for a in attrs.fields(WorkloadSpec))
# The slots' own setters (a frozen class refuses ``setattr``), one per field, in the order
# ``with_replicas`` sets them: a field added to WorkloadSpec must be added there too.
_SET_NAME, _SET_IMAGE, _SET_REPLICAS, _SET_ARGS, _SET_ENV, _SET_LABELS, _SET_RES, _SET_PORTS = (
    WorkloadSpec.__dict__[name].__set__
    for name in ("name", "image", "replicas", "args", "env", "labels", "resources", "ports")
)
assert set(_SPEC_FIELDS) == {
    "name",
    "image",
    "replicas",
    "args",
    "env",
    "labels",
    "resources",
    "ports",
}, "with_replicas sets every field of WorkloadSpec"


def with_replicas(spec: WorkloadSpec, replicas: int) -> WorkloadSpec:
    """``attrs.evolve(spec, replicas=replicas)``, equal in every field, without running the
    other fields' converters again: they hold converted (canonical) values already, and
    ``replicas`` has none. A scale's apply on every node (docs/performance.md, "Round 11
    (s12-cpu)": ``evolve`` was 5-7 % of a follower's samples under a scale load; Round 15:
    each slot set by its own setter, not a loop of ``getattr`` and ``object.__setattr__`` by
    name, 0.5 against 1.2 µs)."""
    new = object.__new__(WorkloadSpec)
    _SET_NAME(new, spec.name)
    _SET_IMAGE(new, spec.image)
    _SET_REPLICAS(new, replicas)
    _SET_ARGS(new, spec.args)
    _SET_ENV(new, spec.env)
    _SET_LABELS(new, spec.labels)
    _SET_RES(new, spec.resources)
    _SET_PORTS(new, spec.ports)
    return new


@attrs.frozen(kw_only=True, slots=True)
class WorkloadStatus:
    """Observed state of a workload, derived from its instances when it is read.

    It is not stored and does not change the workload's ``version``: instance status changes
    bump the *instance's* version only, so a client scaling a workload with an expected version
    does not conflict with instance churn (like Kubernetes ``generation`` vs status).
    """

    phase: WorkloadPhase
    desired: int
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    unknown: int = 0


@attrs.frozen(kw_only=True, slots=True)
class Workload:
    """A workload as stored, with its derived status."""

    id: str
    spec: WorkloadSpec
    status: WorkloadStatus
    version: int  # log index of the last change (create, update, scale)
    created_index: int

    @property
    def updated_index(self) -> int:
        """The log index of the last change (the same as ``version``)."""
        return self.version


@attrs.frozen(kw_only=True, slots=True)
class InstanceSpec:
    """What to create: an instance of ``workload_id``, on ``node_id`` or not yet scheduled."""

    workload_id: str
    node_id: str | None = None


@attrs.frozen(kw_only=True, slots=True)
class Instance:
    """One running (or pending, or finished) copy of a workload.

    Invariants kept by the state machine: ``workload_id`` names an existing workload;
    ``node_id`` is None or names an existing node.
    """

    id: str
    workload_id: str
    node_id: str | None
    status: InstanceStatus
    message: str  # free text from the last status update (exit reason, error)
    version: int
    created_index: int

    @property
    def updated_index(self) -> int:
        """The log index of the last change (the same as ``version``)."""
        return self.version


@attrs.frozen(kw_only=True, slots=True)
class NodeInfo:
    """A machine that runs instances: how to reach it, what it offers, how it is labelled."""

    id: str
    addresses: tuple[str, ...] = attrs.field(default=(), converter=to_str_tuple)
    capacity: Resources = Resources()
    labels: Pairs = attrs.field(default=(), converter=to_pairs)


@attrs.frozen(kw_only=True, slots=True)
class Node:
    """A registered node with its status."""

    info: NodeInfo
    status: NodeStatus
    version: int
    created_index: int

    @property
    def id(self) -> str:
        """The node id (``info.id``)."""
        return self.info.id

    @property
    def updated_index(self) -> int:
        """The log index of the last change (the same as ``version``)."""
        return self.version
