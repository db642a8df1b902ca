"""Shared helpers for the state machine tests: a log that applies at consecutive indexes."""

from __future__ import annotations

from typing import Any

from univrs.sm import (
    ClusterStateMachine,
    NodeInfo,
    Port,
    Resources,
    Response,
    SessionPolicy,
    WorkloadSpec,
    snapshot_plain,
)


class Log:
    """Applies commands to a state machine at consecutive log indexes (term 1)."""

    def __init__(self, sm: ClusterStateMachine | None = None, *, term: int = 1) -> None:
        self.sm = sm if sm is not None else ClusterStateMachine()
        self.term = term

    def __call__(self, command: Any, *, time_ms: int | None = None) -> Response:
        index = self.sm.last_applied_index + 1
        return self.sm.apply(command, index=index, term=self.term, time_ms=time_ms)

    @property
    def index(self) -> int:
        return self.sm.last_applied_index


def spec(name: str = "web", /, **overrides: Any) -> WorkloadSpec:
    """A valid workload spec; keyword arguments override fields."""
    fields: dict[str, Any] = {
        "name": name,  # overridable: spec(**{"name": ...})
        "image": "nginx:1.25",
        "replicas": 2,
        "args": ("--port", "80"),
        "env": {"MODE": "prod", "LOG": "info"},
        "labels": {"app": name},
        "resources": Resources(cpu_millis=250, memory_bytes=128 << 20),
        "ports": (Port(container_port=80, name="http"),),
    }
    fields.update(overrides)
    return WorkloadSpec(**fields)


def node_info(node_id: str = "n1", **overrides: Any) -> NodeInfo:
    """A valid node description; keyword arguments override fields."""
    fields: dict[str, Any] = {
        "id": node_id,
        "addresses": ("10.0.0.1:7000",),
        "capacity": Resources(cpu_millis=4000, memory_bytes=8 << 30),
        "labels": {"zone": "a"},
    }
    fields.update(overrides)
    return NodeInfo(**fields)


def contents(sm: ClusterStateMachine) -> dict[str, Any]:
    """The snapshot plain data without the log position: what a command may change."""
    plain = snapshot_plain(sm)
    for key in ("last_index", "last_term", "clock_ms"):
        del plain[key]
    return plain


def objects(sm: ClusterStateMachine) -> dict[str, Any]:
    """Workloads, instances, nodes and balances only (no sessions, no log position). The
    sessions' owners go too: they are listed in session activity order, which a retried
    command legitimately moves (the property test found that at 25b8b31)."""
    plain = contents(sm)
    del plain["sessions"]
    plain.pop("session_owners", None)
    return plain


def small_policy(**overrides: Any) -> SessionPolicy:
    """A session policy with small limits, for tests that reach them."""
    fields: dict[str, Any] = {"window": 4, "max_sessions": 3, "ttl_entries": None, "ttl_ms": None}
    fields.update(overrides)
    return SessionPolicy(**fields)
