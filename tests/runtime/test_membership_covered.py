"""A membership change whose entry a snapshot from the leader covers (s15-small): the old
``change`` reported a committed change as overwritten ("retry") when a later change had
applied before the snapshot; it is reported committed when the committed configuration holds
it, and never as committed when it was not (the outcome is unknown then, not success)."""

from __future__ import annotations

import pytest
import trio

from tests.runtime.memcluster import in_background, start_cluster, wait_leader, wait_until
from univrs.raft.messages import Membership
from univrs.runtime import membership as ms
from univrs.runtime.driver import RaftRuntime

IDS = ["a", "b", "c"]


async def _add_in_background(
    nursery: trio.Nursery, runtime: RaftRuntime, node_id: str
) -> list[Membership | Exception]:
    """``add_learner(node_id)`` on ``runtime`` in the background: its result or its error."""
    return await in_background(
        nursery,
        lambda: ms.add_learner(runtime, node_id, node_id, None, incarnation=f"i-{node_id}"),
    )


async def test_a_committed_change_covered_by_a_snapshot_is_reported_committed(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The leader is cut off inbound while its change (learner d) is in flight: its append
    reaches the others, who elect a new leader that commits it, makes another change (learner
    e) and compacts past both. The old leader then installs the snapshot: its caller is told
    the change committed (it did), not MembershipBusy "overwritten ... retry"."""
    cluster, old = await start_cluster(nursery, IDS)
    cluster.deaf.add(old.node_id)
    outcome = await _add_in_background(nursery, old, "d")
    new = await wait_leader(cluster, [i for i in IDS if i != old.node_id])
    await wait_until(lambda: "d" in new.applied_membership.learners, "d on the new leader")
    await ms.add_learner(new, "e", "e", None, incarnation="i-e")
    meta = await new.take_snapshot()
    assert meta is not None and new.status().first_index > meta.index
    assert not outcome
    cluster.deaf.clear()
    await wait_until(lambda: outcome, "the change on the old leader to end")
    assert isinstance(outcome[0], Membership), outcome  # MembershipBusy before the fix
    assert {"d", "e"} <= outcome[0].learners
    assert old.applied_index >= meta.index


async def test_a_change_overwritten_and_covered_by_a_snapshot_is_never_reported_committed(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The leader's change never leaves it (cut off both ways); the new leader makes another
    change and compacts past the index. The old leader's caller must not hear success."""
    cluster, old = await start_cluster(nursery, IDS)
    cluster.cut.add(old.node_id)
    outcome = await _add_in_background(nursery, old, "d")
    new = await wait_leader(cluster, [i for i in IDS if i != old.node_id])
    await ms.add_learner(new, "e", "e", None, incarnation="i-e")
    for _ in range(3):
        await ms.add_learner(new, "e", "e", None, incarnation="i-e")  # idempotent: no entry
    meta = await new.take_snapshot()
    assert meta is not None and new.status().first_index > meta.index
    cluster.cut.clear()
    await wait_until(lambda: outcome, "the change on the old leader to end")
    assert isinstance(outcome[0], ms.MembershipBusy), outcome
    assert "d" not in old.applied_membership.members


@pytest.mark.parametrize("in_effect", [True, False])
def test_in_effect_asks_the_builder_as_a_retry_would(in_effect: bool) -> None:
    applied = Membership(voters=frozenset(IDS))

    def build(m: Membership) -> Membership | None:
        if not in_effect:
            raise ms.MembershipError("refused now")
        return None

    assert ms._in_effect(build, applied) is in_effect
