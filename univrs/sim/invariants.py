"""The names of the simulator's invariants, and the exception that reports a breach.

checker.py documents what each invariant means; the simulator (cluster.py) adds liveness,
core-exception, compaction-bound, forgery-refused, state-durable (the LMDB state backend) and
ack-later (an acknowledgement left for the leader's next input changed something: base.py
``settle``), which it checks itself.
"""

from __future__ import annotations

from univrs.errors import UnivrsError

ELECTION_SAFETY = "election-safety"
LOG_MATCHING = "log-matching"
STATE_MACHINE_SAFETY = "state-machine-safety"
COMMITTED_DURABLE = "committed-durable"
CONFIG_SAFETY = "config-safety"
LEADER_COMPLETENESS = "leader-completeness"
LEADER_APPEND_ONLY = "leader-append-only"
LINEARIZABLE_READ = "linearizable-read"
EXACTLY_ONCE = "exactly-once"
READY_CONTRACT = "ready-contract"
REPLICATION_PROGRESS = "replication-progress"
COMPACTION_BOUND = "compaction-bound"
LIVENESS = "liveness"
CORE_EXCEPTION = "core-exception"
CORE_INVARIANT = "core-invariant"
FORGERY_REFUSED = "forgery-refused"
STATE_DURABLE = "state-durable"
ACK_LATER = "ack-later"

INVARIANTS = (
    ELECTION_SAFETY,
    LOG_MATCHING,
    STATE_MACHINE_SAFETY,
    COMMITTED_DURABLE,
    CONFIG_SAFETY,
    LEADER_COMPLETENESS,
    LEADER_APPEND_ONLY,
    LINEARIZABLE_READ,
    EXACTLY_ONCE,
    READY_CONTRACT,
    REPLICATION_PROGRESS,
    COMPACTION_BOUND,
    LIVENESS,
    CORE_EXCEPTION,
    CORE_INVARIANT,
    FORGERY_REFUSED,
    STATE_DURABLE,
    ACK_LATER,
)


class InvariantViolation(UnivrsError):
    """A simulation broke an invariant; ``invariant`` names it, ``detail`` says how."""

    def __init__(self, invariant: str, detail: str) -> None:
        self.invariant = invariant
        self.detail = detail
        super().__init__(f"{invariant}: {detail}")
