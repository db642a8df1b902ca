"""What the simulator's parts see of the simulation they run in (no import cycles).

``cluster.Simulation`` (the composition root) builds the API, the clients, the fault injector
and the operator and hands itself to each as a ``World``; they import this module, never
``cluster`` or the runtime's layers (runtime.py), so the simulator's imports form no cycle
(tests/test_layers.py). A simulated server is ``node.SimNode``; its parts see it as ``Node``
(its fields are read and written freely: it is a record of the simulation's state, documented
in node.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from univrs.raft.messages import NodeId
from univrs.sim.network import SimNetwork

Node = Any
"""A ``univrs.sim.node.SimNode`` (kept opaque here to keep the graph one-way: node.py imports
the API's and the clients' records, and they import this module)."""


class World(Protocol):
    """The simulation as its parts use it (``univrs.sim.cluster.Simulation``)."""

    now: int
    rng: random.Random
    nodes: dict[NodeId, Node]
    net: SimNetwork
    node_ids: list[NodeId]  # every node: initial voters and spares
    operator: Any  # membership.Operator, or None
    workload: Any  # clients.Workload
    api: Any  # api.SimApi
    checker: Any  # checker.Checker
    config: Any  # the cores' RaftConfig
    trace: Any  # collections.deque of (time, what, detail): the recent events
    quiet: bool
    tick_units: int
    wipe_bootstrap_members: bool  # wipes may hit bound bootstrap members (cluster.py)
    ticks: int  # of the fault phase
    rollbacks: Any  # rollback.Rollbacks, or None

    def at(self, time: int, fn: Callable[[Any], None], arg: Any) -> None: ...

    def drain(self, sn: Node) -> None: ...

    def settle(self, sn: Node) -> None: ...

    def sync_clock(self, sn: Node) -> None: ...

    def lease_gate_open(self, sn: Node) -> bool: ...

    def current_leader(self) -> Node | None: ...

    def client_targets(self) -> list[NodeId]: ...

    def fault_targets(self) -> list[NodeId]: ...

    def crash(self, sn: Node) -> None: ...

    def retire(self, sn: Node) -> None: ...

    def wipe(self, sn: Node) -> None: ...

    def resume(self, arg: tuple[Node, int]) -> None: ...

    def start(self, sn: Node) -> None: ...

    def restart(self, arg: tuple[Node, int]) -> None: ...
