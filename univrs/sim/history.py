"""What clients saw, checked against the committed log (the Checker's client half).

Positions of writes are *revisions* (kv.py: the log index while every entry carries one
write; a batch entry's writes take consecutive ones), computed by the checker from the
committed log; the "index" of a write below is its revision, that of a read a log index.

``ClientHistory`` keeps, per key, the committed indexes that wrote it and the values they
wrote, so ``value_at(key, i)`` is what the committed log holds for ``key`` after entries
1..i. The Checker (checker.py) reports each client write the first time its index is applied
and it took effect (``_took_effect``); the clients report what they were answered
(``observe_answer``, ``observe_ack``) and what a read returned (``observe_read``); a node's
snapshot is compared with the same history (``check_snapshot_state``).

Invariants (see checker.py for the whole list):

* exactly-once: a client write (unique id) takes effect at most once in the committed log; a
  client answered "applied" finds it applied at the answered index; a client answered
  "conflict" (a conditional write refused, like a 409) never has it take effect;
* linearizable-read: a released read is served at an applied index at least the largest index
  of a write acknowledged before the read was issued, and returns exactly what the committed log
  holds for its key at that index (a read released before its read index is applied breaks the
  ready-contract).
"""

from __future__ import annotations

import bisect

import attrs

from univrs.raft.messages import NodeId
from univrs.sim.invariants import (
    EXACTLY_ONCE,
    LINEARIZABLE_READ,
    READY_CONTRACT,
    STATE_MACHINE_SAFETY,
    InvariantViolation,
)
from univrs.sim.kv import KvWrite
from univrs.sim.mirror import LogMirror

__all__ = ["ClientHistory"]


@attrs.define(eq=False)
class ClientHistory(LogMirror):
    """The committed history of every key and what clients were told of it (see above)."""

    max_acked: int = attrs.field(init=False, default=0)  # a revision
    # The revision after each committed entry (index -> revision; [0]: nothing applied). The
    # history below is kept by revision: a batch entry's writes have one index each.
    revisions: list[int] = attrs.field(init=False, factory=lambda: [0])
    # Per key: the committed indexes that wrote it (ascending) and the values they wrote.
    _hist: dict[str, tuple[list[int], list[str]]] = attrs.field(init=False, factory=dict)
    # Client writes that took effect (write id -> index), and those answered "conflict".
    _effects: dict[tuple[int, int], int] = attrs.field(init=False, factory=dict)
    _refused: set[tuple[int, int]] = attrs.field(init=False, factory=set)

    # ---------------------------------------------------------------- writes

    def _took_effect(self, w: KvWrite, index: int) -> None:
        wid = w.wid
        first = self._effects.get(wid)
        if first is not None:
            raise InvariantViolation(
                EXACTLY_ONCE,
                f"write {wid} ({w.key}={w.value}) took effect twice: at index {first} and "
                f"again at {index}",
            )
        if wid in self._refused:
            raise InvariantViolation(
                EXACTLY_ONCE,
                f"conditional write {wid} ({w.key}={w.value}) took effect at index {index} "
                f"after its client was answered 'conflict'",
            )
        self._effects[wid] = index
        idx, vals = self._hist.setdefault(w.key, ([], []))
        idx.append(index)
        vals.append(w.value)

    def observe_answer(self, w: KvWrite, result: str, index: int) -> None:
        """A client was answered ``result`` (ok | conflict) for write ``w``, applied at
        ``index`` (for a keyed duplicate: where it was first applied)."""
        wid = w.wid
        applied_at = self._effects.get(wid)
        if result == "ok":
            if applied_at != index:
                raise InvariantViolation(
                    EXACTLY_ONCE,
                    f"write {wid} ({w.key}={w.value}) was answered 'ok' at index {index} but "
                    f"it took effect at {applied_at}",
                )
        else:
            if applied_at is not None:
                raise InvariantViolation(
                    EXACTLY_ONCE,
                    f"conditional write {wid} ({w.key}={w.value}) was answered 'conflict' "
                    f"(at index {index}) although it took effect at index {applied_at}",
                )
            self._refused.add(wid)
        self.observe_ack(index)

    def observe_ack(self, index: int) -> None:
        """A client saw its write at ``index`` acknowledged."""
        if index > self.max_acked:
            self.max_acked = index

    def value_at(self, key: str, index: int) -> str | None:
        """What the committed log holds for ``key`` after applying entries 1..index."""
        h = self._hist.get(key)
        if h is None:
            return None
        k = bisect.bisect_right(h[0], index)
        return h[1][k - 1] if k else None

    def observe_read(
        self,
        node: NodeId,
        *,
        ctx: int,
        read_index: int,
        served_at: int,
        key: str,
        value: str | None,
        acked_at_issue: int,
    ) -> None:
        """A read released at ``read_index`` was served from ``node``'s state at ``served_at``."""
        if served_at < read_index:
            raise InvariantViolation(
                READY_CONTRACT,
                f"{node} released read {ctx} at read index {read_index} with applied {served_at}",
            )
        if self.revisions[min(served_at, len(self.revisions) - 1)] < acked_at_issue:
            raise InvariantViolation(
                LINEARIZABLE_READ,
                f"stale read {ctx} of {key!r} on {node}: served at applied index {served_at} "
                f"(read index {read_index}) but a write at index {acked_at_issue} was "
                f"acknowledged before the read was issued",
            )
        if served_at >= len(self.committed):
            raise InvariantViolation(
                READY_CONTRACT, f"{node} served read {ctx} at {served_at}, beyond what it applied"
            )
        want = self.value_at(key, self.revisions[served_at])
        if value != want:
            raise InvariantViolation(
                LINEARIZABLE_READ,
                f"read {ctx} of {key!r} on {node} at index {served_at} returned {value!r}; "
                f"the committed log holds {want!r} there",
            )

    # ---------------------------------------------------------------- snapshots

    def check_snapshot_state(self, node: NodeId, index: int, state: dict[str, str]) -> None:
        """A snapshot at ``index`` must hold exactly the committed state at ``index``."""
        revision = self.revisions[index]
        for key in sorted(set(state) | set(self._hist)):
            want = self.value_at(key, revision)
            if state.get(key) != want:
                raise InvariantViolation(
                    STATE_MACHINE_SAFETY,
                    f"{node}: snapshot at {index} holds {key}={state.get(key)!r}; the committed "
                    f"log gives {want!r}",
                )
