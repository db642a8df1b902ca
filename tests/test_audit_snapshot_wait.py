"""s13-audit: a forger's last snapshot chunks are refused while the leader's snapshot is
checked, not kept until the check ends.

While a check is in flight (checking.py), a last chunk waits behind it. Every last chunk
did, whoever sent it: a made-up peer's chunks (4 MiB a frame) piled up in memory for the
whole check (65 s at 1M objects) and were refused only after it."""

from __future__ import annotations

import trio

from tests.runtime.memcluster import wait_until
from tests.runtime.test_snapshot_check_live import _behind, _HeldCheck, held_check
from univrs.raft.messages import InstallSnapshot, SnapshotMeta
from univrs.runtime.driver import RaftRuntime

__all__ = ["held_check"]  # the fixture, used by name

FORGED = 50


def _refused(runtime: RaftRuntime) -> int:
    return dict(runtime.status().refused).get("stranger", 0)


async def test_a_strangers_last_chunks_during_a_check_are_refused_not_held(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, held_check: _HeldCheck
) -> None:
    """Fails on the code before: the forged chunks waited behind the held check (no refusal
    counted until it ends: the wait below times out)."""
    cluster, _leader, behind, meta = await _behind(nursery)
    cluster.cut.clear()
    await wait_until(held_check.started.is_set, "the check to start")
    before = _refused(behind)
    term = behind.status().term
    for k in range(FORGED):
        cluster.deliver(
            InstallSnapshot(
                term=term,
                src=f"forger{k}",
                dst=behind.node_id,
                meta=SnapshotMeta(index=meta.index + 1, term=term, membership=meta.membership),
                offset=0,
                data=b"x" * 1024,
                done=True,
                total_size=1024,
                checksum=k,
            )
        )
    await wait_until(
        lambda: _refused(behind) >= before + FORGED, "the forged chunks refused during the check"
    )
    assert not held_check.released.is_set()  # still checking
    held_check.released.set()
    await wait_until(lambda: behind.applied_index >= meta.index, "the snapshot to be installed")
    assert behind.applied_index >= meta.index
