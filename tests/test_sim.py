"""The cluster simulator's invariant checkers: each must catch a breach (whole runs:
tests/test_sim_runs.py)."""

from __future__ import annotations

import attrs
import pytest

from tests.sim_helpers import (
    NODES,
    apply_all,
    config,
    durable_everywhere,
    entry,
    expect,
    write,
)
from univrs.raft.messages import Entry, Membership
from univrs.raft.ready import Role
from univrs.sim import checker as ck
from univrs.sim.checker import Checker
from univrs.sim.kv import (
    KvStore,
    KvWrite,
    decode_write,
    decode_writes,
    encode_batch,
    encode_write,
)

# ------------------------------------------------------------------ the checkers themselves


def test_two_leaders_in_one_term_are_caught() -> None:
    c = Checker(voters=NODES)
    c.observe_role("a", Role.LEADER, 2)
    c.observe_role("a", Role.LEADER, 2)  # the same leader again is fine
    c.observe_role("b", Role.LEADER, 3)
    with expect(ck.ELECTION_SAFETY):
        c.observe_role("c", Role.LEADER, 2)


def test_divergent_applied_entries_are_caught() -> None:
    c = Checker(voters=NODES)
    log_a = [entry(1, 1), write(2, 1, "x", "1")]
    durable_everywhere(c, log_a)
    apply_all(c, "a", log_a)
    apply_all(c, "b", log_a[:1])
    bad = write(2, 2, "x", "2")
    with expect(ck.STATE_MACHINE_SAFETY):
        c.observe_apply("b", bad, decode_write(bad.data), effect=True)


def test_log_matching_breach_is_caught() -> None:
    c = Checker(voters=NODES)
    c.observe_issued("a", None, [entry(1, 1), write(2, 2, "x", "1")])
    with expect(ck.LOG_MATCHING):
        # Same (index, term) at 2, but a different entry at 1 underneath it.
        c.observe_issued("b", None, [entry(1, 3), write(2, 2, "x", "1")])


def test_stale_read_is_caught() -> None:
    c = Checker(voters=NODES)
    log = [entry(1, 1), write(2, 1, "x", "old"), write(3, 1, "x", "new")]
    durable_everywhere(c, log)
    apply_all(c, "a", log)
    apply_all(c, "b", log[:2])
    c.observe_ack(3)
    acked = c.max_acked
    # Served at index 3 with the right value: fine.
    c.observe_read(
        "a", ctx=1, read_index=3, served_at=3, key="x", value="new", acked_at_issue=acked
    )
    with expect(ck.LINEARIZABLE_READ):  # b has not applied the acknowledged write
        c.observe_read(
            "b", ctx=2, read_index=2, served_at=2, key="x", value="old", acked_at_issue=acked
        )


def test_wrong_read_value_is_caught() -> None:
    c = Checker(voters=NODES)
    log = [entry(1, 1), write(2, 1, "x", "v2")]
    durable_everywhere(c, log)
    apply_all(c, "a", log)
    assert c.value_at("x", 1) is None and c.value_at("x", 2) == "v2"
    with expect(ck.LINEARIZABLE_READ):
        c.observe_read("a", ctx=1, read_index=2, served_at=2, key="x", value="v1", acked_at_issue=0)


def test_commit_without_durable_quorum_is_caught() -> None:
    c = Checker(voters=NODES)
    log = [entry(1, 1), write(2, 1, "x", "1")]
    durable_everywhere(c, log[:1])
    c.observe_issued("a", None, log[1:])
    c.observe_durable("a", None, log[1:])  # only a holds entry 2 durably
    apply_all(c, "a", log[:1])
    with expect(ck.COMMITTED_DURABLE):
        apply_all(c, "a", log[1:])


def test_truncating_a_committed_entry_is_caught() -> None:
    c = Checker(voters=NODES)
    log = [entry(1, 1), write(2, 1, "x", "1")]
    durable_everywhere(c, log)
    apply_all(c, "a", log)
    c.observe_issued("c", None, [write(3, 2, "y", "1")])  # an uncommitted suffix may go
    c.observe_issued("c", 3, [write(3, 3, "y", "2")])
    with expect(ck.COMMITTED_DURABLE):
        c.observe_issued("b", 2, [write(2, 3, "x", "2")])


def test_a_slow_durable_truncation_decided_before_the_commit_is_no_violation() -> None:
    # Simulator seed 42248 (7 nodes) in small: c holds (2, t1) durably, takes b's conflicting
    # (2, t2) of term 2 on a slow disk, and before that write lands a leads term 3 and commits
    # (2, t1) with d and e (c's answer never counted). The write then lands: c's durable log
    # drops a committed entry, by a decision taken while it was not committed. Raft allows it
    # (the committed entry stays on a majority); the checker flagged it before.
    c = Checker(voters=FIVE)
    one, old = entry(1, 1), write(2, 1, "x", "1")
    durable_everywhere(c, [one], FIVE)
    durable_everywhere(c, [old], ["a", "c"])
    c.observe_term("b", 2)
    c.observe_role("b", Role.LEADER, 2)
    new = write(2, 2, "x", "2")
    durable_everywhere(c, [new], ["b"])
    c.observe_term("c", 2)
    c.observe_issued("c", 2, [new])  # decided now, durable much later
    for n in ("a", "d", "e"):
        c.observe_term(n, 3)
    c.observe_role("a", Role.LEADER, 3)
    noop = entry(3, 3)
    durable_everywhere(c, [noop], ["a"])
    durable_everywhere(c, [old, noop], ["d", "e"])
    c.observe_commit("a", 3, leading=True)
    apply_all(c, "a", [one, old, noop])
    c.observe_durable("c", 2, [new])  # the slow write lands
    assert c.commit_index() == 3


def test_a_commit_counting_a_node_that_decided_to_drop_the_entry_is_still_caught() -> None:
    # The other side of the test above: c acknowledged (2, t1) durably but has since taken a
    # conflicting (2, t2) (not durable yet), and a commits (2, t1) counting c. The durable
    # check no longer sees c's drop (decided before the commit), but the commit is still
    # caught when it is applied: c, whose log lacks the entry, could be elected.
    c = Checker(voters=NODES)
    one, old = entry(1, 1), write(2, 1, "x", "1")
    durable_everywhere(c, [one])
    durable_everywhere(c, [old], ["a", "c"])
    c.observe_term("c", 2)
    c.observe_issued("c", 2, [write(2, 2, "x", "2")])
    with expect(ck.COMMITTED_DURABLE):
        apply_all(c, "a", [one, old])


def test_leader_lacking_a_committed_entry_is_caught() -> None:
    c = Checker(voters=NODES)
    log = [entry(1, 1), write(2, 1, "x", "1")]
    durable_everywhere(c, log, ["a", "b"])
    durable_everywhere(c, log[:1], ["c"])
    c.observe_role("a", Role.LEADER, 1)
    c.observe_term("a", 1)
    apply_all(c, "a", log)
    c.observe_role("b", Role.LEADER, 2)  # b holds everything committed
    with expect(ck.LEADER_COMPLETENESS):
        c.observe_role("c", Role.LEADER, 3)


def test_leader_truncating_its_own_log_is_caught() -> None:
    c = Checker(voters=NODES)
    c.observe_issued("a", None, [entry(1, 1), entry(2, 2)])
    c.observe_role("a", Role.LEADER, 2)
    c.observe_issued("a", None, [entry(3, 2)])
    with expect(ck.LEADER_APPEND_ONLY):
        c.observe_issued("a", 3, [])


def test_applying_before_durable_is_caught() -> None:
    c = Checker(voters=NODES)
    log = [entry(1, 1)]
    for n in ["b", "c"]:
        c.observe_issued(n, None, log)
        c.observe_durable(n, None, log)
    c.observe_issued("a", None, log)  # issued, not durable on a
    with expect(ck.READY_CONTRACT):
        apply_all(c, "a", log)


def test_rewriting_identical_entries_is_not_a_truncation() -> None:
    c = Checker(voters=NODES)
    log = [entry(1, 1), entry(2, 1)]
    durable_everywhere(c, log)
    apply_all(c, "a", log)
    c.observe_role("b", Role.LEADER, 1)
    c.observe_issued("b", 1, log)  # same entries again: nothing is removed
    c.observe_durable("b", 1, log)
    assert c.commit_index() == 2


def test_kv_encoding_round_trips() -> None:
    w = KvWrite(client=3, op=7, key="k1", value="c3.7", keyed=True, cond=True, expect="c1.2")
    assert decode_write(encode_write(w)) == w
    with pytest.raises(ValueError):
        decode_write(b'{"not": "a write"}')


def test_the_store_dedups_keyed_writes_and_refuses_stale_conditions() -> None:
    kv = KvStore()
    first = KvWrite(client=1, op=1, key="k", value="v1", keyed=True)
    assert kv.apply(entry(1, 1, encode_write(first)), (first,)) == [(("ok", 1), True)]
    # The same keyed write again (a retry): the first result, nothing applied again.
    assert kv.apply(entry(2, 1, encode_write(first)), (first,)) == [(("ok", 1), False)]
    cas = KvWrite(client=2, op=1, key="k", value="v2", cond=True, expect="v0")
    assert kv.apply(entry(3, 1, encode_write(cas)), (cas,)) == [(("conflict", 3), False)]
    cas = attrs.evolve(cas, op=2, expect="v1")
    assert kv.apply(entry(4, 1, encode_write(cas)), (cas,)) == [(("ok", 4), True)]
    assert kv.get("k") == "v2"
    again = KvStore()
    again.restore(kv.snapshot(), 4, 1, kv.config)
    assert again.apply(entry(5, 1, encode_write(first)), (first,)) == [(("ok", 1), False)]


def test_a_batch_entry_applies_its_writes_at_consecutive_revisions() -> None:
    """The simulated store numbers a batch's writes like the node's state machine
    (univrs/sm/state.py): each takes max(last + 1, index); the snapshot keeps the revision."""
    kv = KvStore()
    a = KvWrite(client=1, op=1, key="a", value="1")
    b = KvWrite(client=2, op=1, key="b", value="1", keyed=True)
    c = KvWrite(client=2, op=1, key="b", value="1", keyed=True)  # b's retry, in the same batch
    data = encode_batch([encode_write(w) for w in (a, b, c)])
    assert decode_writes(data) == (a, b, c)
    assert kv.apply(entry(1, 1, data), (a, b, c)) == [
        (("ok", 1), True),
        (("ok", 2), True),
        (("ok", 2), False),
    ]
    assert kv.apply(entry(2, 1, b"")) == [(None, False)]  # an entry without a write
    assert (kv.applied, kv.revision) == (2, 4)
    again = KvStore()
    again.restore(kv.snapshot(), 2, 1, kv.config)
    assert again.revision == 4
    d = KvWrite(client=3, op=1, key="d", value="1")
    assert again.apply(entry(3, 1, encode_write(d)), (d,)) == [(("ok", 5), True)]


def test_a_shared_batch_revision_is_caught() -> None:
    """The checker numbers a batch entry's writes from the committed log itself: a store
    that answers them with one shared revision (the batch-shared-revision mutant) is caught."""
    c = Checker(voters=NODES)
    a = KvWrite(client=1, op=1, key="a", value="1")
    b = KvWrite(client=2, op=1, key="b", value="1")
    batch = entry(1, 1, encode_batch([encode_write(a), encode_write(b)]))
    durable_everywhere(c, [batch])
    c.observe_apply("a", batch, (a, b), (True, True))
    c.observe_answer(a, "ok", 1)
    with expect(ck.EXACTLY_ONCE):
        c.observe_answer(b, "ok", 1)
    c.observe_answer(b, "ok", 2)


def test_a_write_taking_effect_twice_is_caught() -> None:
    c = Checker(voters=NODES)
    w = KvWrite(client=1, op=1, key="x", value="c1.1")
    log = [entry(1, 1), entry(2, 1, encode_write(w)), entry(3, 1, encode_write(w))]
    durable_everywhere(c, log)
    c.observe_apply("a", log[0])
    c.observe_apply("a", log[1], w, effect=True)
    c.observe_answer(w, "ok", 2)
    with expect(ck.EXACTLY_ONCE):
        c.observe_apply("a", log[2], w, effect=True)


def test_a_conflict_answer_for_an_applied_write_is_caught() -> None:
    c = Checker(voters=NODES)
    w = KvWrite(client=1, op=1, key="x", value="c1.1", cond=True, expect=None)
    log = [entry(1, 1), entry(2, 1, encode_write(w)), entry(3, 1, encode_write(w))]
    durable_everywhere(c, log)
    c.observe_apply("a", log[0])
    c.observe_apply("a", log[1], w, effect=True)
    c.observe_apply("a", log[2], w, effect=False)  # the retry finds its own value: conflict
    with expect(ck.EXACTLY_ONCE):
        c.observe_answer(w, "conflict", 3)
    # And the other order: answered conflict first, applied later.
    c = Checker(voters=NODES)
    durable_everywhere(c, log)
    c.observe_apply("a", log[0])
    c.observe_answer(w, "conflict", 1)
    with expect(ck.EXACTLY_ONCE):
        c.observe_apply("a", log[1], w, effect=True)


def test_an_ok_answer_for_a_write_that_did_not_take_effect_is_caught() -> None:
    c = Checker(voters=NODES)
    w = KvWrite(client=1, op=1, key="x", value="c1.1")
    with expect(ck.EXACTLY_ONCE):
        c.observe_answer(w, "ok", 2)


def test_commit_of_a_previous_term_entry_alone_is_caught() -> None:
    # Figure 8: "a" leads term 3 with an old entry (2, t1) that b also holds durably; a's own
    # noop (3, t3) is not durable on a quorum yet, so committing index 2 is not justified.
    c = Checker(voters=NODES)
    old = [entry(1, 1), write(2, 1, "x", "1")]
    durable_everywhere(c, old, ["a", "b"])
    durable_everywhere(c, old[:1], ["c"])
    c.observe_term("a", 3)
    c.observe_role("a", Role.LEADER, 3)
    noop = entry(3, 3)
    c.observe_issued("a", None, [noop])
    c.observe_commit("a", 1, leading=False)  # learnt as a follower
    with expect(ck.COMMITTED_DURABLE):
        c.observe_commit("a", 2, leading=True)
    # Once the noop is durable on a and b, the same commit is justified.
    c2 = Checker(voters=NODES)
    durable_everywhere(c2, [*old, noop], ["a", "b"])
    c2.observe_term("a", 3)
    c2.observe_role("a", Role.LEADER, 3)
    c2.observe_commit("a", 3, leading=True)


def test_commit_that_a_stale_candidate_could_undo_is_caught() -> None:
    # c holds a conflicting entry of a higher term (3) at index 2; a commits (2, t1), durable
    # on a and b, but a's durable log (last term 1) would still vote for c.
    c = Checker(voters=NODES)
    durable_everywhere(c, [entry(1, 1), write(2, 1, "x", "1")], ["a", "b"])
    durable_everywhere(c, [entry(1, 1), write(2, 3, "x", "3")], ["c"])
    # b moved on (a newer entry of term 4 durable), a did not.
    c.observe_issued("b", None, [entry(3, 4)])
    c.observe_durable("b", None, [entry(3, 4)])
    apply_all(c, "b", [entry(1, 1)])
    with expect(ck.COMMITTED_DURABLE):
        apply_all(c, "b", [write(2, 1, "x", "1")])


# ------------------------------------------------------------------ configurations

FIVE = ["a", "b", "c", "d", "e"]


def test_durability_is_counted_over_the_configuration_in_force() -> None:
    c = Checker(voters=FIVE)
    log = [config(1, 1, "abc"), write(2, 1, "x", "1")]
    durable_everywhere(c, log[:1], FIVE)
    durable_everywhere(c, log[1:], ["a", "b"])  # a majority of {a,b,c}, not of the five
    apply_all(c, "a", log)
    assert c.commit_index() == 2
    c = Checker(voters=FIVE)
    durable_everywhere(c, log[:1], FIVE)
    durable_everywhere(c, log[1:], ["a", "d", "e"])  # three of five, but d and e do not vote
    apply_all(c, "a", log[:1])
    with expect(ck.COMMITTED_DURABLE):
        apply_all(c, "a", log[1:])


def leading_after_changes(changes: list[Entry], durable_on: str) -> Checker:
    """a leads term 2 of {a..e} (committed at 1) and appended ``changes``, durable on
    ``durable_on``."""
    c = Checker(voters=FIVE)
    boot = [config(1, 1, "abcde")]
    durable_everywhere(c, boot, FIVE)
    c.observe_commit("b", 1, leading=False)
    c.observe_term("a", 2)
    c.observe_role("a", Role.LEADER, 2)
    durable_everywhere(c, changes, list(durable_on))
    return c


def test_a_commit_two_configuration_changes_away_is_caught() -> None:
    # One change in flight: {a,b,c} is a quorum of {a,b,c,d} and meets every majority of the
    # five.
    c = leading_after_changes([config(2, 2, "abcd")], "abc")
    c.observe_commit("a", 2, leading=True)
    # Two in flight: {a,b} is a quorum of {a,b,c} but {c,d,e}, a majority of the committed
    # five, could elect a leader without index 3.
    c = leading_after_changes([config(2, 2, "abcd"), config(3, 2, "abc")], "ab")
    with expect(ck.CONFIG_SAFETY):
        c.observe_commit("a", 3, leading=True)
    # Counting over the wrong configuration is not a quorum at all.
    c = leading_after_changes([config(2, 2, "abcd")], "ab")
    with expect(ck.COMMITTED_DURABLE):
        c.observe_commit("a", 2, leading=True)


def test_a_snapshot_with_another_configuration_is_caught() -> None:
    c = Checker(voters=NODES)
    log = [config(1, 1, "abc"), write(2, 1, "x", "1")]
    durable_everywhere(c, log)
    apply_all(c, "a", log)
    c.observe_snapshot("b", 2, 1, durable=False, membership=Membership(voters=frozenset("abc")))
    with expect(ck.CONFIG_SAFETY):
        c.observe_snapshot("c", 2, 1, durable=False, membership=Membership(voters=frozenset("ab")))


def test_a_commit_index_into_another_log_is_caught() -> None:
    c = Checker(voters=NODES, spares=["d"])
    log = [entry(1, 1), write(2, 1, "x", "1")]
    durable_everywhere(c, log)
    apply_all(c, "a", log)
    c.observe_commit("b", 2, leading=False)
    c.observe_issued("d", None, [entry(1, 1), write(2, 2, "x", "2")])
    with expect(ck.STATE_MACHINE_SAFETY):
        c.observe_commit("d", 2, leading=False)


def stale_c_after_two_removals(*, wipe: bool) -> Checker:
    """{a..e} removed d then e (committed on a, b and, for d's removal, e); c missed both.
    d and e are stopped for good, and with ``wipe`` they come back with empty disks."""
    c = Checker(voters=FIVE)
    boot = [config(1, 1, "abcde")]
    durable_everywhere(c, boot, FIVE)
    apply_all(c, "a", boot)
    changes = [config(2, 2, "abce"), config(3, 2, "abc")]
    durable_everywhere(c, changes[:1], ["a", "b", "e"])
    durable_everywhere(c, changes[1:], ["a", "b"])
    apply_all(c, "a", changes)
    for n in "de":
        c.observe_retire(n)
        if wipe:
            c.observe_wipe(n)
    durable_everywhere(c, [write(4, 2, "x", "1")], ["a", "b"])
    return c


def test_a_stale_node_electable_with_empty_nodes_is_caught() -> None:
    # Stopped for good, d and e vote for no one: c cannot be elected.
    c = stale_c_after_two_removals(wipe=False)
    apply_all(c, "a", [write(4, 2, "x", "1")])
    # With empty disks they grant any vote, and c's configuration still lists them as voters.
    c = stale_c_after_two_removals(wipe=True)
    with expect(ck.COMMITTED_DURABLE):
        apply_all(c, "a", [write(4, 2, "x", "1")])
