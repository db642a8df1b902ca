"""A workload's status is a value of its desired count and its instance counts
(univrs/sm/objects.py ``view_of``): the statuses it looks up are the ones it would build."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from univrs.sm.model import InstanceStatus, WorkloadPhase, WorkloadSpec
from univrs.sm.objects import StoredWorkload, view_of, workload_status

small = st.integers(0, 3)


@settings(max_examples=300)
@given(st.lists(st.tuples(small, small, small, small, small, small), min_size=1, max_size=40))
def test_every_view_has_the_status_its_counts_give(rows: list[tuple[int, ...]]) -> None:
    """Views of many counts in a row (so many come from the remembered statuses): each has
    the status built from its own numbers. A memory keyed without ``desired`` (or any one
    count) answers a status of other numbers and fails here."""
    for desired, pending, running, succeeded, failed, unknown in rows:
        stored = StoredWorkload(
            id="w",
            spec=WorkloadSpec(name="web", image="nginx:1", replicas=desired),
            version=1,
            created_index=1,
        )
        counts = {
            InstanceStatus.PENDING: pending,
            InstanceStatus.RUNNING: running,
            InstanceStatus.SUCCEEDED: succeeded,
            InstanceStatus.FAILED: failed,
            InstanceStatus.UNKNOWN: unknown,
        }
        status = view_of(stored, counts).status
        assert status == workload_status(desired, pending, running, succeeded, failed, unknown)
        assert (status.desired, status.pending, status.running) == (desired, pending, running)
        assert (status.succeeded, status.failed, status.unknown) == (succeeded, failed, unknown)
        if running >= desired:
            assert status.phase is WorkloadPhase.READY
        elif failed or unknown:
            assert status.phase is WorkloadPhase.DEGRADED
        else:
            assert status.phase is WorkloadPhase.PROGRESSING
