"""A workload's status, derived from how many of its instances are in each status (``Counts``).

A stored workload (``StoredWorkload``) has no status of its own: ``Objects`` keeps each
workload's counts as a row of their own (``univrs.sm.objects``, s14-page) and a read asks
``status_of(stored, counts)``; the statuses themselves are shared values, one per distinct
(desired, counts), built once.
"""

from __future__ import annotations

import attrs

from univrs.sm.model import (
    InstanceStatus,
    Workload,
    WorkloadPhase,
    WorkloadSpec,
    WorkloadStatus,
)

# How many instances of a workload are in each status: (pending, running, succeeded, failed,
# unknown), the order of ``COUNT_SLOT``.
Counts = tuple[int, int, int, int, int]
ZERO_COUNTS: Counts = (0, 0, 0, 0, 0)
COUNT_SLOT: dict[InstanceStatus, int] = {
    InstanceStatus.PENDING: 0,
    InstanceStatus.RUNNING: 1,
    InstanceStatus.SUCCEEDED: 2,
    InstanceStatus.FAILED: 3,
    InstanceStatus.UNKNOWN: 4,
}


@attrs.frozen(kw_only=True, slots=True)
class StoredWorkload:
    """A workload as stored (its status is derived from its instances when read)."""

    id: str
    spec: WorkloadSpec
    version: int
    created_index: int


# Statuses by (desired, pending, running, succeeded, failed, unknown): a status is a value of
# those six numbers alone, and every rendered workload (each write's answer, each read) needs
# one; building it costs more than looking it up. Bounded: emptied when full.
_STATUSES: dict[tuple[int, int, int, int, int, int], WorkloadStatus] = {}
_MAX_STATUSES = 4096


def workload_status(
    desired: int, pending: int, running: int, succeeded: int, failed: int, unknown: int
) -> WorkloadStatus:
    """The status of a workload that wants ``desired`` instances and has these."""
    if running >= desired:
        phase = WorkloadPhase.READY
    elif failed or unknown:
        phase = WorkloadPhase.DEGRADED
    else:
        phase = WorkloadPhase.PROGRESSING
    return WorkloadStatus(
        phase=phase,
        desired=desired,
        pending=pending,
        running=running,
        succeeded=succeeded,
        failed=failed,
        unknown=unknown,
    )


def view_of(stored: StoredWorkload, counts: Counts) -> Workload:
    """The workload with the status its instance counts (``Objects.instance_counts``) give."""
    return Workload(
        id=stored.id,
        spec=stored.spec,
        status=status_of(stored, counts),
        version=stored.version,
        created_index=stored.created_index,
    )


def status_of(stored: StoredWorkload, counts: Counts) -> WorkloadStatus:
    """The status these instance counts give the workload (shared: one per distinct key)."""
    return status_for(stored.spec.replicas, counts)


def status_for(desired: int, counts: Counts) -> WorkloadStatus:
    """The status of a workload that wants ``desired`` instances and has ``counts`` (shared:
    one per distinct key)."""
    key = (desired, *counts)
    status = _STATUSES.get(key)
    if status is None:
        status = workload_status(*key)
        if len(_STATUSES) >= _MAX_STATUSES:
            _STATUSES.clear()
        _STATUSES[key] = status
    return status
