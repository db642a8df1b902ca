"""What one planned fault of a chaos run actually did (``univrs.chaos.faults``): the record
the report and the checks read."""

from __future__ import annotations

import attrs


@attrs.define(eq=False)
class FaultRecord:
    """What one planned fault actually did, with real times (seconds after the run start)."""

    index: int
    label: str
    kind: str
    start: float
    end: float | None = None
    targets: tuple[str, ...] = ()
    note: str = ""
    # Partitions: per node it cut off, seconds from healing until it followed the agreed
    # leader again (None: not within the monitor's HEAL_WATCH_TIMEOUT, or the fault phase
    # ended first).
    leader_after_heal: dict[str, float | None] = attrs.field(factory=dict)

    def to_plain(self) -> dict[str, object]:
        return {
            "index": self.index,
            "label": self.label,
            "kind": self.kind,
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "targets": list(self.targets),
            "note": self.note,
            "leader_after_heal": dict(self.leader_after_heal),
        }
