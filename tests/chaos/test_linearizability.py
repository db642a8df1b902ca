"""The linearizability checker on small hand-made histories, and against a brute-force oracle."""

from __future__ import annotations

import random
import time

from tests.chaos.histories import H, brute_force, ops_of
from univrs.chaos.history import EventType, Fn, Operation
from univrs.chaos.linearizability import Verdict, check_history, check_operations

OK, FAIL, UNKNOWN = Verdict.OK, Verdict.FAIL, Verdict.UNKNOWN


def verdict(h: H, **kw: object) -> Verdict:
    return check_history(h.sorted_events(), **kw).verdict  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- hand-made


def test_empty_history_is_linearizable() -> None:
    assert check_history([]).verdict is OK


def test_sequential_write_then_read() -> None:
    h = H().op(0, "write", "x", "a", 0, 1).op(0, "read", "x", None, 2, 3, out="a")
    assert verdict(h) is OK


def test_read_of_absent_key_is_null() -> None:
    assert verdict(H().op(0, "read", "x", None, 0, 1, out=None)) is OK
    assert verdict(H().op(0, "read", "x", None, 0, 1, out="a")) is FAIL


def test_read_of_a_value_nobody_wrote() -> None:
    h = H().op(0, "write", "x", "a", 0, 1).op(1, "read", "x", None, 2, 3, out="zzz")
    assert verdict(h) is FAIL


def test_stale_read_after_a_newer_write_completed() -> None:
    h = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(0, "write", "x", "b", 2, 3)
        .op(1, "read", "x", None, 4, 5, out="a")
    )
    assert verdict(h) is FAIL


def test_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in ("a", None):
        h = H().op(0, "write", "x", "a", 0, 10).op(1, "read", "x", None, 1, 2, out=seen)
        assert verdict(h) is OK, seen


def test_new_value_then_old_value_is_not_linearizable() -> None:
    # Two reads during one write: once a read has returned the new value, a read that starts
    # later must not see the old one (the classic non-atomic register).
    h = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(0, "write", "x", "b", 2, 20)
        .op(1, "read", "x", None, 3, 4, out="b")
        .op(2, "read", "x", None, 5, 6, out="a")
    )
    assert verdict(h) is FAIL
    # ... while the other way round is fine
    h2 = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(0, "write", "x", "b", 2, 20)
        .op(1, "read", "x", None, 3, 4, out="a")
        .op(2, "read", "x", None, 5, 6, out="b")
    )
    assert verdict(h2) is OK


def test_lost_acknowledged_write_read_as_absent() -> None:
    h = H().op(0, "write", "x", "a", 0, 1).op(1, "read", "x", None, 2, 3, out=None)
    result = check_history(h.sorted_events())
    assert result.verdict is FAIL
    (bad,) = result.failures
    assert bad.key == "x"
    assert bad.stuck is not None and bad.stuck.f is Fn.READ
    assert "read" in bad.explanation


def test_lost_acknowledged_write_overwritten_by_an_older_one() -> None:
    # b was acknowledged after a; a later (final) read returning a means b was lost.
    h = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(1, "write", "x", "b", 2, 3)
        .op(2, "read", "x", None, 10, 11, out="a")
    )
    assert verdict(h) is FAIL


def test_lost_write_among_several_keys_names_the_key() -> None:
    h = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(1, "write", "y", "b", 0, 1)
        .op(0, "read", "x", None, 2, 3, out="a")
        .op(1, "read", "y", None, 2, 3, out=None)
    )
    result = check_history(h.sorted_events())
    assert result.verdict is FAIL
    assert [k.key for k in result.failures] == ["y"]
    assert "y" in result.summary()


def test_failed_write_must_not_be_visible() -> None:
    h = H().op(0, "write", "x", "a", 0, 1, status="fail").op(1, "read", "x", None, 2, 3, out="a")
    assert verdict(h) is FAIL
    h2 = H().op(0, "write", "x", "a", 0, 1, status="fail").op(1, "read", "x", None, 2, 3)
    assert verdict(h2) is OK


def test_unknown_write_may_or_may_not_take_effect() -> None:
    for seen in ("a", None):
        h = (
            H()
            .op(0, "write", "x", "a", 0, 1, status="info")
            .op(1, "read", "x", None, 5, 6, out=seen)
        )
        assert verdict(h) is OK, seen


def test_unknown_write_may_take_effect_long_after_it_timed_out() -> None:
    # absent, then (much later) a; no upper bound on an info operation's return
    h = (
        H()
        .op(0, "write", "x", "a", 0, None)
        .op(1, "read", "x", None, 5, 6, out=None)
        .op(1, "read", "x", None, 100, 101, out="a")
    )
    assert verdict(h) is OK


def test_unknown_write_cannot_take_effect_before_it_was_invoked() -> None:
    h = H().op(1, "read", "x", None, 0, 1, out="a").op(0, "write", "x", "a", 5, 6, status="info")
    assert verdict(h) is FAIL


def test_unknown_write_takes_effect_at_most_once() -> None:
    # a, then b (acknowledged), then a again: the unknown write of a cannot come back
    h = (
        H()
        .op(0, "write", "x", "a", 0, 1, status="info")
        .op(1, "read", "x", None, 2, 3, out="a")
        .op(1, "write", "x", "b", 4, 5)
        .op(1, "read", "x", None, 6, 7, out="a")
    )
    assert verdict(h) is FAIL


def test_cas() -> None:
    ok = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(0, "cas", "x", ["a", "b"], 2, 3)
        .op(0, "read", "x", None, 4, 5, out="b")
    )
    assert verdict(ok) is OK
    wrong_old = H().op(0, "write", "x", "a", 0, 1).op(0, "cas", "x", ["z", "b"], 2, 3)
    assert verdict(wrong_old) is FAIL
    mismatch = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(0, "cas", "x", ["z", "b"], 2, 3, status="fail", mismatch=True)
        .op(0, "read", "x", None, 4, 5, out="a")
    )
    assert verdict(mismatch) is OK
    from_absent = H().op(0, "cas", "x", [None, "b"], 0, 1).op(0, "read", "x", None, 2, 3, out="b")
    assert verdict(from_absent) is OK


def test_two_cas_from_the_same_value_cannot_both_succeed() -> None:
    h = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(1, "cas", "x", ["a", "b"], 2, 5)
        .op(2, "cas", "x", ["a", "c"], 2, 5)
    )
    assert verdict(h) is FAIL


def test_unknown_cas_chain_keeps_the_write_it_depends_on() -> None:
    # Only the unknown cas (a -> b) explains reading b, and it needs the unknown write of a:
    # the checker must not drop that write as unobserved.
    h = (
        H()
        .op(0, "write", "x", "a", 0, None)
        .op(1, "cas", "x", ["a", "b"], 1, None)
        .op(2, "read", "x", None, 10, 11, out="b")
    )
    assert verdict(h) is OK
    without_write = (
        H().op(1, "cas", "x", ["a", "b"], 1, None).op(2, "read", "x", None, 10, 11, out="b")
    )
    assert verdict(without_write) is FAIL


def test_delete() -> None:
    h = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(0, "delete", "x", None, 2, 3)
        .op(1, "read", "x", None, 4, 5, out=None)
    )
    assert verdict(h) is OK
    h2 = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(0, "delete", "x", None, 2, 3)
        .op(1, "read", "x", None, 4, 5, out="a")
    )
    assert verdict(h2) is FAIL


def test_structured_values_compare_by_content() -> None:
    h = (
        H()
        .op(0, "write", "x", {"v": [1, 2]}, 0, 1)
        .op(0, "read", "x", None, 2, 3, out={"v": [1, 2]})
    )
    assert verdict(h) is OK


def test_initial_values() -> None:
    h = H().op(0, "read", "x", None, 0, 1, out="seed")
    assert check_history(h.sorted_events(), initial={"x": "seed"}).verdict is OK
    assert check_history(h.sorted_events()).verdict is FAIL


def test_failure_explanation_names_the_stuck_operation() -> None:
    h = (
        H()
        .op(3, "write", "x", "a", 0, 1)
        .op(3, "write", "x", "b", 2, 3)
        .op(4, "read", "x", None, 4, 5, out="a")
    )
    (bad,) = check_history(h.sorted_events()).failures
    assert bad.stuck is not None
    assert bad.stuck.process == 4
    assert "process 4" in bad.explanation
    assert len(bad.longest_prefix) == 2


# ---------------------------------------------------------------------------- bounded search


def _hard_history(width: int) -> H:
    # ``width`` concurrent unknown writes whose values are all read, then a read of a value
    # nobody wrote: refuting it means trying (nearly) every order of the writes.
    h = H()
    for i in range(width):
        h.op(i, "write", "x", f"v{i}", 0, None)
    for i in range(width):
        h.op(100 + i, "read", "x", None, 1 + i, 1.5 + i, out=f"v{i}" if i % 2 else f"v{width - i}")
    h.op(999, "read", "x", None, 1000, 1001, out="never-written")
    return h


def test_search_gives_up_with_unknown_instead_of_hanging() -> None:
    started = time.monotonic()
    result = check_history(_hard_history(40).sorted_events(), timeout=0.3)
    assert time.monotonic() - started < 10
    assert result.verdict is UNKNOWN
    assert "timed out" in result.summary()


def test_keys_after_the_deadline_are_unknown_not_skipped() -> None:
    h = _hard_history(40)
    h.op(0, "read", "zz", None, 0, 1)
    result = check_history(h.sorted_events(), timeout=0.2)
    assert {k.key: k.verdict for k in result.keys}["zz"] is UNKNOWN


# ---------------------------------------------------------------------------- oracle


def _random_history(rng: random.Random, n_ops: int, linearizable_bias: bool) -> list[Operation]:
    """Random small history on one key; when ``linearizable_bias`` the outputs come from a real
    register run (so most are linearizable), otherwise they are random."""
    h = H()
    state = None
    t = 0.0
    values = ["a", "b", "c", None]
    written = 0
    for i in range(n_ops):
        start = t + rng.random()
        end = start + rng.random() * 3
        t = start
        f = rng.choice(["read", "read", "write", "cas", "delete"])
        status = rng.choice(["ok", "ok", "ok", "info", "fail"])
        if f == "write":
            written += 1
            val = f"w{written}"
            if status == "ok" and linearizable_bias:
                state = val
            h.op(
                i,
                "write",
                "x",
                val,
                start,
                end if status != "info" or rng.random() < 0.5 else None,
                status=status,
            )
        elif f == "read":
            out = state if linearizable_bias else rng.choice([*values, f"w{written}"])
            h.op(
                i,
                "read",
                "x",
                None,
                start,
                end,
                status=status if status != "fail" else "ok",
                out=out,
            )
        elif f == "cas":
            old = state if rng.random() < 0.6 else rng.choice(values)
            written += 1
            new = f"w{written}"
            st = status
            if linearizable_bias and st == "ok":
                if old == state:
                    state = new
                else:
                    st = "fail"
            h.op(i, "cas", "x", [old, new], start, end, status=st)
        else:
            if status == "ok" and linearizable_bias:
                state = None
            h.op(i, "delete", "x", None, start, end, status=status)
    return ops_of(h)


def test_agrees_with_brute_force_on_random_small_histories() -> None:
    rng = random.Random(7)
    seen = {OK: 0, FAIL: 0}
    for i in range(800):
        ops = _random_history(rng, rng.randint(1, 6), linearizable_bias=i % 2 == 0)
        expected = OK if brute_force(ops) else FAIL
        got = check_operations("x", ops).verdict
        assert got is expected, ops
        seen[got] += 1
    # the generator exercised both answers
    assert seen[OK] > 20 and seen[FAIL] > 20, seen


def test_unknown_reads_are_ignored() -> None:
    ops = ops_of(H().op(0, "read", "x", None, 0, 1, status="info").op(1, "write", "x", "a", 2, 3))
    assert ops[0].status is EventType.INFO
    assert check_operations("x", ops).operations == 1
