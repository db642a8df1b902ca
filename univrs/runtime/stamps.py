"""The time a leader stamps into its entries: the log's own clock, not the wall clock (s14-owner).

Theory of operation
-------------------
The state machine expires client sessions by the time stamped into the log entries
(``ClusterStateMachine.clock_ms``, the largest stamp applied; univrs/sm/sessions.py): it reads
no clock, so every replica expires the same sessions at the same entry. Until session 14 a
leader stamped its wall clock (``time.time()``). A wall clock jumps: stepped forward by more
than the session TTL (an NTP step, an operator, a VM resumed) it expired every session at
the next entry, active ones too, so keyed retries in flight lost exactly-once; stepped back,
time stood still for the table until the clock caught up again.

So a node keeps the *log clock*: an anchor (a stamp, the monotonic time it was learned at),
and reads it as ``anchor stamp + monotonic time elapsed since``. It learns a stamp whenever
its state machine's ``clock_ms`` gets ahead of its own reading (after each applied chunk:
``observe``), never otherwise. Hence:

* a leader's stamps advance exactly by its monotonic clock (trio's clock, which never jumps),
  whatever its wall clock does, and never go back;
* a follower's reading is the newest stamp it applied plus the time since it applied it: at
  most the leader's (the entry was stamped before it arrived), and it keeps counting while
  the cluster is idle, so a new leader continues from the last stamp *and* counts the time
  since it heard of it (an election, an idle hour), not only from its own start;
* a node that (re)starts anchors on its state's ``clock_ms`` (what it applied before it
  stopped) and counts from its start, then jumps forward to any newer stamp it applies; the
  time it was down is not counted unless another node, which was up, stamps it;
* the wall clock is read once, for the first anchor of a state that never applied a stamp (a
  new cluster, whose first leader stamps it, so stamps stay close to real time to read, as
  before; or a new member, whose first applied stamp replaces it, ahead or behind).

Every error of the reading is on the late side (a stamp lower than the real time since the
previous one): sessions may live somewhat longer than their TTL (by the time no live node
counted: a whole-cluster outage), never shorter. An early expiry loses exactly-once; a late
one keeps a session's memory a while longer. The monotonic clocks of two nodes run at rates
that differ by their crystals' drift (parts per million, slewed by NTP): a follower whose
clock runs fast reads ahead of the leader by that drift times the time since it last learned
a newer stamp, which a new leader then stamps; negligible against TTLs of minutes to hours.

Older leaders stamp their wall clocks; a log of both kinds applies as before (the state
machine keeps the largest stamp), and a new leader continues from the largest.
"""

from __future__ import annotations

import attrs


@attrs.define(eq=False)
class LogClock:
    """A node's reading of the log's clock (see the module docstring). Times in: trio's
    (monotonic) clock in seconds; stamps in and out: milliseconds."""

    _stamp_ms: int  # the anchor: a stamp ...
    _at: float  # ... and the monotonic time it was learned (or this clock started) at
    # The anchor is a stamp of the log (False: the wall clock, the state having applied none).
    _learned: bool = True

    @classmethod
    def starting(cls, applied_ms: int, now: float, wall_ms: int) -> LogClock:
        """The clock of a node whose state applied stamps up to ``applied_ms`` (0: none, a new
        cluster or a new member: then ``wall_ms``, the wall clock now, until it learns a
        stamp), at monotonic time ``now``."""
        if applied_ms > 0:
            return cls(applied_ms, now)
        return cls(wall_ms, now, False)

    def read(self, now: float) -> int:
        """The stamp for an entry proposed at monotonic time ``now``."""
        elapsed = now - self._at
        return self._stamp_ms + (int(elapsed * 1000) if elapsed > 0 else 0)

    def observe(self, stamp_ms: int, now: float) -> bool:
        """Learn ``stamp_ms`` (the state machine's ``clock_ms`` after an apply; 0: none yet) at
        monotonic time ``now``: the reading jumps to it if it is ahead, or if the reading
        came from the wall clock (the first stamp a new member applies replaces its own wall
        clock, ahead or behind). True if it did."""
        if stamp_ms <= 0 or (self._learned and stamp_ms <= self.read(now)):
            return False
        self._stamp_ms, self._at, self._learned = stamp_ms, now, True
        return True
