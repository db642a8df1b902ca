"""Pure parts of the run: partitions, policy combination, lost writes, metrics, leaderless."""

from __future__ import annotations

import random

import pytest

from tests.chaos.histories import H, ops_of
from univrs.chaos.checks import lost_writes
from univrs.chaos.history import Fn, Operation
from univrs.chaos.links import LinkFaults, combine, partition_links
from univrs.chaos.metrics import (
    first_ok_write_after,
    longest_unavailability,
    outcome_counts,
    percentile,
    recovery,
    throughput,
)
from univrs.chaos.monitor import Sample, agreed_leader, leaderless_windows
from univrs.chaos.proxy import PASS, FaultProxy, LinkPolicy
from univrs.chaos.report import RunResult, render_html, summary_lines, summary_table

NODES = ["n1", "n2", "n3", "n4", "n5"]


def _connected(links: set[tuple[str, str]], a: str, b: str) -> bool:
    return (a, b) not in links and (b, a) not in links


def test_isolate_cuts_every_link_of_the_target_both_ways() -> None:
    links, _, _ = partition_links("isolate", NODES, "n2", None, "any", "out", random.Random(1))
    assert links == {("n2", o) for o in NODES if o != "n2"} | {
        (o, "n2") for o in NODES if o != "n2"
    }


@pytest.mark.parametrize("side", ["minority", "majority"])
def test_halves_put_the_leader_where_asked(side: str) -> None:
    for seed in range(20):
        links, sides, about = partition_links(
            "halves", NODES, "n1", "n3", side, "out", random.Random(seed)
        )
        minority = [n for n in NODES if n != "n3" and not _connected(links, "n3", n)]
        with_leader = [n for n in NODES if _connected(links, "n3", n)]
        # the side holding the leader has 2 nodes when it is the minority, 3 otherwise
        assert len(with_leader) == (2 if side == "minority" else 3), sides
        assert len(minority) == 5 - len(with_leader)
        assert len(about) == 2 and (("n3" in about) == (side == "minority"))


def test_one_way() -> None:
    out, _, _ = partition_links("one-way", NODES[:3], "n1", None, "any", "out", random.Random(1))
    assert out == {("n1", "n2"), ("n1", "n3")}
    into, _, _ = partition_links("one-way", NODES[:3], "n1", None, "any", "in", random.Random(1))
    assert into == {("n2", "n1"), ("n3", "n1")}


def test_bridge_connects_both_halves_only_through_the_bridge() -> None:
    links, _, _ = partition_links("bridge", NODES, "n3", None, "any", "out", random.Random(2))
    assert not any("n3" in link for link in links)
    others = [n for n in NODES if n != "n3"]
    cut = [(a, b) for a in others for b in others if a < b and not _connected(links, a, b)]
    assert len(cut) == 4  # two halves of two: 2 x 2 pairs cut, each both ways
    assert len(links) == 8


def test_combine_policies() -> None:
    assert combine([]) == PASS
    p = combine(
        [LinkPolicy(delay=0.1), LinkPolicy(partitioned=True, loss=0.2), LinkPolicy(delay=0.3)]
    )
    assert p.partitioned and p.delay == 0.3 and p.loss == 0.2 and not p.retransmit
    assert combine([PASS, LinkPolicy(partitioned=True, retransmit=True)]).retransmit


def test_overlapping_link_faults_combine_and_heal_one_by_one() -> None:
    proxies = {
        (a, b): FaultProxy(src=a, dst=b, target="127.0.0.1:1", rng=random.Random(1))
        for a in NODES[:3]
        for b in NODES[:3]
        if a != b
    }
    faults = LinkFaults(proxies)
    assert faults.of("n1") == {("n1", "n2"), ("n1", "n3"), ("n2", "n1"), ("n3", "n1")}
    assert faults.of("all") == faults.of(None) == set(proxies)
    faults.add(1, faults.of("n1"), LinkPolicy(delay=0.5))
    faults.add(2, {("n1", "n2")}, LinkPolicy(partitioned=True))
    assert proxies["n1", "n2"].policy == LinkPolicy(partitioned=True, delay=0.5)
    assert proxies["n2", "n3"].policy == PASS
    faults.remove(2)  # the partition heals; the delay of fault 1 stays
    assert proxies["n1", "n2"].policy == LinkPolicy(delay=0.5)
    faults.add(3, {("n2", "n3")}, LinkPolicy(loss=0.1))
    faults.heal()
    assert all(proxy.policy == PASS for proxy in proxies.values())


def test_the_summary_prints_the_time_to_leader_after_heal() -> None:
    r = RunResult(scenario="s", path="", seed=1, out="/tmp/x", end=20.0)
    r.faults = [
        {"index": 0, "label": "partition one-way in of follower", "start": 3.0, "end": 7.0,
         "targets": ["n2"], "note": "", "leader_after_heal": {"n2": 0.16}},
        {"index": 1, "label": "partition isolate follower", "start": 9.0, "end": 13.0,
         "targets": ["n3"], "note": "", "leader_after_heal": {"n3": None}},
        {"index": 2, "label": "kill leader", "start": 15.0, "end": 18.0, "targets": ["n1"],
         "note": ""},
    ]  # fmt: skip
    text = "\n".join(summary_lines(r))
    assert "leader after heal: n2 0.16s" in text
    assert "leader after heal: n3 not within the watch" in text
    assert "time to leader after heal: 1 measured, median 0.16s, max 0.16s; 1 never" in text
    header, row = summary_table([r]).splitlines()
    assert "HEAL" in header.split() and "0.16s" in row.split()
    page = render_html(r, [])
    assert "<th>leader after heal</th>" in page and "<td>n2 0.16s</td>" in page


# ---------------------------------------------------------------------------- lost writes


def _finals(ops: list[Operation], process: int) -> dict[str, Operation]:
    return {op.key: op for op in ops if op.process == process and op.f is Fn.READ}


def test_acknowledged_write_replaced_by_an_older_value_is_lost() -> None:
    h = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(1, "write", "x", "b", 2, 3)
        .op(9, "read", "x", None, 10, 11, out="a")
    )
    ops = ops_of(h)
    (lost,) = lost_writes(ops, _finals(ops, 9))
    assert (lost.key, lost.value, lost.final) == ("x", "b", "a")
    assert "lost" in lost.describe()


def test_acknowledged_write_missing_entirely_is_lost() -> None:
    ops = ops_of(H().op(0, "write", "x", "a", 0, 1).op(9, "read", "x", None, 10, 11, out=None))
    assert [w.value for w in lost_writes(ops, _finals(ops, 9))] == ["a"]


def test_no_loss_when_the_final_value_may_legitimately_be_last() -> None:
    concurrent = (
        H()
        .op(0, "write", "x", "a", 0, 5)
        .op(1, "write", "x", "b", 1, 3)
        .op(9, "read", "x", None, 10, 11, out="a")
    )
    ops = ops_of(concurrent)
    assert lost_writes(ops, _finals(ops, 9)) == []
    deleted = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(1, "delete", "x", None, 2, 3)
        .op(9, "read", "x", None, 10, 11, out=None)
    )
    ops = ops_of(deleted)
    assert lost_writes(ops, _finals(ops, 9)) == []
    unknown_later = (
        H()
        .op(0, "write", "x", "a", 0, 1)
        .op(1, "write", "x", "b", 2, 3)
        .op(2, "write", "x", "a2", 4, None)
        .op(9, "read", "x", None, 10, 11, out="a2")
    )
    ops = ops_of(unknown_later)
    assert lost_writes(ops, _finals(ops, 9)) == []


# ---------------------------------------------------------------------------- metrics


def _sample_history() -> list[Operation]:
    return ops_of(
        H()
        .op(0, "write", "x", "a", 0.0, 0.5)
        .op(0, "write", "x", "b", 1.0, 1.2)
        .op(1, "read", "x", None, 1.5, 1.6, out="b")
        .op(0, "write", "x", "c", 2.0, 6.0, status="info")
        .op(2, "write", "x", "d", 3.0, 7.5)
        .op(2, "cas", "x", ["z", "e"], 8.0, 8.1, status="fail", mismatch=True)
    )


def test_counts_and_unavailability() -> None:
    ops = _sample_history()
    c = outcome_counts(ops)
    assert c["all"] == {"ok": 4, "fail": 1, "info": 1}
    assert c["write"] == {"ok": 3, "fail": 0, "info": 1}
    gap = longest_unavailability(ops, 0.0, 10.0)
    assert (gap.start, gap.end) == (1.2, 7.5)
    assert gap.length == pytest.approx(6.3)


def test_recovery_after_a_fault() -> None:
    ops = _sample_history()
    assert first_ok_write_after(ops, 1.1) == 7.5
    assert first_ok_write_after(ops, 9.0) is None
    r = recovery(ops, 2.5, 5.0)
    assert r["to_first_ok_write_after_start"] == pytest.approx(5.0)
    assert r["to_first_ok_write_after_end"] is None


def test_throughput_buckets() -> None:
    series = throughput(_sample_history(), end=9.0)
    assert len(series["ok"]) == 9
    assert sum(series["ok"]) == 4 and sum(series["info"]) == 1 and sum(series["fail"]) == 1
    assert series["info"][2] == 1  # counted at its invocation


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([1, 2, 3, 4], 0.5) == 2
    assert percentile([1, 2, 3, 4], 0.99) == 4


# ---------------------------------------------------------------------------- leaders


def _view(role: str, term: int, leader: str | None) -> dict[str, object]:
    return {"role": role, "term": term, "leader": leader}


def test_agreed_leader_needs_a_majority() -> None:
    views = {
        "n1": _view("leader", 3, "n1"),
        "n2": _view("follower", 3, "n1"),
        "n3": None,
    }
    assert agreed_leader(views, 3) == "n1"
    views["n2"] = _view("follower", 2, "n1")  # an old term does not count
    assert agreed_leader(views, 3) is None


def test_agreed_leader_counts_the_leaders_voters() -> None:
    leader = {"role": "leader", "term": 4, "leader": "n1", "voters": ["n1", "n2", "n4"]}
    views = {
        "n1": leader,
        "n2": _view("follower", 4, "n1"),
        "n3": _view("follower", 4, "n1"),  # removed: not a voter any more, does not count
        "n4": None,
        "n5": None,
    }
    assert agreed_leader(views, 5) == "n1"  # 2 of the 3 voters, although 2 of 5 nodes
    views["n2"] = None
    assert agreed_leader(views, 5) is None


def test_leaderless_windows() -> None:
    led = (("n1", _view("leader", 2, "n1")), ("n2", _view("follower", 2, "n1")))
    none = (("n1", None), ("n2", _view("candidate", 3, None)))
    samples = [
        Sample(time=0.0, views=led),
        Sample(time=1.0, views=none),
        Sample(time=1.5, views=none),
        Sample(time=2.0, views=led),
        Sample(time=3.0, views=none),
    ]
    assert leaderless_windows(samples, 3, 0.0, 4.0) == [(1.0, 2.0), (3.0, 4.0)]
