"""``WriteQueue.take`` builds the write of one Ready once (session 30: it used to build it,
then rebuild it with ``attrs.evolve`` to defer or carry a commit-only hard state, twice per
batch on a follower). Held to the old ``take`` (``_reference`` below, its code as it was) over
random runs of persist jobs, other work, takes and completions: the same writes, the same
reports, the same queue state."""

from __future__ import annotations

import random

import attrs
import pytest

from univrs.raft.interpreter import InstallJob, MergedWrite, PersistJob, WriteQueue, merge_jobs
from univrs.raft.messages import Entry, HardState, Heartbeat


class _Reference(WriteQueue[str]):
    def take(self) -> MergedWrite | InstallJob | str:
        items = self._items
        head = items.popleft()
        if not isinstance(head, PersistJob):
            return head
        jobs = [head]
        while items and isinstance(items[0], PersistJob):
            jobs.append(items.popleft())  # type: ignore[arg-type]
        if self._truncating:
            self._truncating -= sum(1 for j in jobs if j.truncate_from is not None)
        merged = merge_jobs(jobs)
        hs = merged.hard_state
        syncs = merged.truncate_from is not None or bool(merged.entries)
        if hs is not None and not syncs:
            durable = self._durable_hs
            if (
                durable is not None
                and hs.term == durable.term
                and hs.vote == durable.vote
                and hs.pins == durable.pins
            ):
                self._pending_hs = hs
                return attrs.evolve(merged, hard_state=None)
        elif hs is None and syncs and self._pending_hs is not None:
            return attrs.evolve(merged, hard_state=self._pending_hs)
        return merged


@pytest.mark.parametrize("seed", range(200))
def test_take_is_the_old_take(seed: int) -> None:
    rng = random.Random(seed)
    new: WriteQueue[str] = WriteQueue()
    old = _Reference()
    term, vote, commit, last = 2, None, 0, 0
    pins: tuple[tuple[str, str], ...] = ()
    taken: list[MergedWrite | InstallJob | str] = []
    for step in range(60):
        op = rng.random()
        if op < 0.55:
            hs = None
            if rng.random() < 0.7:
                r = rng.random()
                if r < 0.1:
                    term += 1
                elif r < 0.15:
                    vote = rng.choice(["a", "b", None])
                elif r < 0.2:
                    pins = (*pins, (f"n{len(pins)}", "inc"))
                commit += rng.randint(0, 2)
                hs = HardState(term=term, vote=vote, commit=commit, pins=pins)
            truncate = None
            if last and rng.random() < 0.1:
                truncate = rng.randint(1, last)
                last = truncate - 1
            entries = tuple(
                Entry(term=term, index=last + 1 + i, data=b"d") for i in range(rng.randint(0, 3))
            )
            last += len(entries)
            after = (Heartbeat(term=term, src="a", dst="b", commit=commit),) * rng.randint(0, 1)
            job = PersistJob(
                hard_state=hs, truncate_from=truncate, entries=entries, after_persist=after
            )
            new.submit(job)
            old.submit(job)
        elif op < 0.6:
            new.submit(f"task {step}")
            old.submit(f"task {step}")
        elif not new.idle:
            got, want = new.take(), old.take()
            assert got == want
            assert (new._pending_hs, new._truncating) == (old._pending_hs, old._truncating)
            taken.append(got)
        if taken and rng.random() < 0.5:
            done = taken.pop(0)
            if isinstance(done, MergedWrite):
                assert new.written(done) == old.written(done)
                assert new._durable_hs == old._durable_hs
    assert len(new) == len(old)
