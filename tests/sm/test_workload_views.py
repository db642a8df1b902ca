"""A workload's status is a value of its desired count and its instance counts
(univrs/sm/objects.py ``view_of``): the statuses it looks up are the ones it would build."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from univrs.sm.model import InstanceStatus, WorkloadPhase, WorkloadSpec
from univrs.sm.objects import COUNT_SLOT, StoredWorkload, view_of, workload_status

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
        by_status = {
            InstanceStatus.PENDING: pending,
            InstanceStatus.RUNNING: running,
            InstanceStatus.SUCCEEDED: succeeded,
            InstanceStatus.FAILED: failed,
            InstanceStatus.UNKNOWN: unknown,
        }
        counts = [0] * 5
        for state, number in by_status.items():
            counts[COUNT_SLOT[state]] = number
        status = view_of(stored, tuple(counts)).status  # type: ignore[arg-type]
        assert status == workload_status(desired, pending, running, succeeded, failed, unknown)
        assert (status.desired, status.pending, status.running) == (desired, pending, running)
        assert (status.succeeded, status.failed, status.unknown) == (succeeded, failed, unknown)
        if running >= desired:
            assert status.phase is WorkloadPhase.READY
        elif failed or unknown:
            assert status.phase is WorkloadPhase.DEGRADED
        else:
            assert status.phase is WorkloadPhase.PROGRESSING


def test_a_write_answer_renders_the_same_document_from_the_stored_parts() -> None:
    """A write's answer (univrs/api/ops.py ``_render_workload``) renders the stored workload
    and its status without building the ``Workload`` view (docs/performance.md, "Round 12
    (s12-cpu2)"): the same document as ``workload_doc`` of the view, whatever the
    instances' statuses; None for a workload that is not there."""
    from tests.sm.test_sm_commands import world
    from univrs.api.convert import stored_workload_doc, workload_doc
    from univrs.sm.commands import ScaleWorkload

    log = world()  # w1 with a running, a pending and a failed instance
    for replicas in (5, 1, 3):
        log(ScaleWorkload(id="w1", replicas=replicas))
        view = log.sm.get_workload("w1")
        parts = log.sm.workload_with_status("w1")
        assert view is not None and parts is not None
        assert parts[0].spec is view.spec and parts[1] == view.status
        assert stored_workload_doc(*parts) == workload_doc(view)
        assert stored_workload_doc(*parts)["spec"]["replicas"] == replicas
    assert log.sm.workload_with_status("nope") is None
