"""Damage at rest for the chaos injector (``univrs.chaos.faults``, whose ``Injector`` has
``DiskFaults`` as a base): the ``corrupt-snapshot`` fault flips one bit of every stored
snapshot file of its target nodes while they run (docs/storage.md, "Guarantees"; docs/chaos.md).
"""

from __future__ import annotations

import os
import pathlib
import random
from typing import TYPE_CHECKING

import trio

from univrs.chaos.fault_record import FaultRecord
from univrs.chaos.scenario import PlannedFault
from univrs.tools.devcluster import LocalCluster


class DiskFaults:
    """The damage faults of ``Injector`` (a base class of it, as ``MembershipFaults``)."""

    cluster: LocalCluster
    rng: random.Random

    if TYPE_CHECKING:

        def _up(self) -> list[str]: ...

        async def _resolve(self, target: str) -> str | None: ...

    async def _corrupt_snapshots(self, fault: PlannedFault, rec: FaultRecord) -> None:
        """Flip one bit of every stored snapshot file of the target nodes (``all`` by default),
        in place while they run, at a random offset: damage at rest (docs/storage.md,
        "Guarantees"). Each node must go on, log it once and retake its snapshot."""
        spec = fault.spec
        one = await self._resolve(spec.target) if spec.target != "all" else None
        nodes = [one] if one else ([] if spec.target != "all" else self._up())
        rec.targets = tuple(nodes)
        flipped = []
        for node in nodes:
            folder = self.cluster.node(node).data_dir / "raft.lmdb"
            for path in sorted(folder.glob("snapshot-*.dat")):
                offset = self.rng.randrange(1 << 40)
                where = await trio.to_thread.run_sync(_flip_bit, path, offset)
                if where is not None:
                    flipped.append(f"{node}:{path.name}@{where}")
        rec.note = "flipped " + (", ".join(flipped) if flipped else "nothing (no snapshot file)")


def _flip_bit(path: pathlib.Path, offset: int) -> int | None:
    """Flip a bit of the file's byte at ``offset`` modulo its size, in place; the offset, or
    None if the file is gone or empty (replaced meanwhile)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        at = offset % size
        (byte,) = os.pread(fd, 1, at)
        os.pwrite(fd, bytes([byte ^ (1 << (offset % 8))]), at)
        return at
    finally:
        os.close(fd)
