"""Scenario files: parsing, validation messages, seeded planning; every shipped file loads."""

from __future__ import annotations

import itertools
import pathlib
import random

import pytest
import trio

from univrs.chaos.orchestrate import judge
from univrs.chaos.runner import wait_for_leader
from univrs.chaos.scenario import (
    ScenarioError,
    find_scenarios,
    load,
    parse,
    plan,
)
from univrs.config import load_config
from univrs.tools.devcluster import LocalCluster

REPO = pathlib.Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "chaos"  # their home; the package ships them as univrs/chaos/scenarios

MINIMAL = {"name": "t", "duration": 30}


def test_defaults() -> None:
    s = parse(dict(MINIMAL))
    assert s.cluster.nodes == 3 and s.cluster.proxies
    assert s.workload.clients == 4 and dict(s.workload.mix)["read"] == 3
    assert s.faults == () and s.cluster.spares == 0 and not s.expect_snapshot_installed


def test_full_fault_entry() -> None:
    s = parse(
        {
            **MINIMAL,
            "fault": [
                {"kind": "kill", "target": "leader", "at": [2, 4], "duration": 3, "every": 10},
                {"kind": "partition", "mode": "halves", "leader": "minority", "at": 5},
                {"kind": "lossy", "loss": 0.1, "at": 1, "duration": 5},
            ],
        }
    )
    kill, part, lossy = s.faults
    assert kill.at == (2.0, 4.0) and kill.duration == (3.0, 3.0) and kill.every == (10.0, 10.0)
    assert part.param("mode") == "halves" and part.param("leader") == "minority"
    assert part.param("direction") == "out"  # the default
    assert lossy.target == "all" and lossy.param("loss") == 0.1


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"durration": 3}, "durration: unknown key"),
        ({"duration": "long"}, "duration: a number"),
        ({"cluster": {"nodes": 0}}, "cluster.nodes: between 1 and 9"),
        ({"workload": {"mix": {"read": 0}}}, "positive weight"),
        ({"workload": {"mix": {"scan": 1}}}, "workload.mix.scan: unknown key"),
        ({"fault": [{"kind": "explode"}]}, "fault[0].kind: one of"),
        ({"fault": [{"kind": "kill", "target": "n9"}]}, "fault[0].target"),
        ({"fault": [{"kind": "kill", "delay": 1}]}, "fault[0].delay: unknown key"),
        ({"fault": [{"kind": "partition", "mode": "diagonal"}]}, "fault[0].mode"),
        ({"fault": [{"kind": "lossy", "loss": 2.0}]}, "probability"),
        ({"fault": [{"kind": "kill", "at": [5, 1]}]}, "reversed"),
        ({"fault": [{"kind": "kill", "at": 99}]}, "not before the end"),
        ({"fault": [{"kind": "kill", "target": "all"}]}, "full-restart"),
        ({"fault": [{"kind": "restart", "signal": "hup"}]}, "signal"),
        ({"fault": {"kind": "kill"}}, "[[fault]]"),
        (
            {"cluster": {"proxies": False}, "fault": [{"kind": "partition"}]},
            "needs cluster.proxies",
        ),
    ],
)
def test_invalid(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse({**MINIMAL, **doc})
    assert message in str(info.value)


def test_partitions_healed_like_tcp_and_the_leader_after_heal_expectation() -> None:
    s = parse(
        {
            **MINIMAL,
            "expect": {"leader_after_heal": 1},
            "fault": [
                {"kind": "partition", "mode": "one-way", "retransmit": True, "at": 2},
                {"kind": "flapping", "at": 4},
            ],
        }
    )
    one_way, flapping = s.faults
    assert one_way.param("retransmit") is True and flapping.param("retransmit") is False
    assert s.expect_leader_after_heal == 1.0
    assert parse(dict(MINIMAL)).expect_leader_after_heal is None
    with pytest.raises(ScenarioError, match=r"fault\[0\]\.retransmit: a bool"):
        parse({**MINIMAL, "fault": [{"kind": "partition", "retransmit": "yes"}]})
    with pytest.raises(ScenarioError, match=r"expect\.leader_after_heal: a number"):
        parse({**MINIMAL, "expect": {"leader_after_heal": "soon"}})


def test_load_names_the_file(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("duration = \n")
    with pytest.raises(ScenarioError, match=r"bad\.toml: TOML syntax error"):
        load(bad)
    good = tmp_path / "mine.toml"
    good.write_text("duration = 10\n")
    assert load(good).name == "mine"  # the file name when no name is given


def test_membership_and_snapshot_faults() -> None:
    s = parse(
        {
            **MINIMAL,
            "cluster": {"nodes": 3, "spares": 2},
            "expect": {"snapshot_installed": True},
            "fault": [
                {"kind": "join", "at": 2, "timeout": 30},
                {"kind": "leave", "target": "n5", "at": 4},
                {"kind": "remove", "target": "leader", "at": 6},
                {"kind": "snapshot", "at": 8},
            ],
        }
    )
    join, leave, remove, snap = s.faults
    assert remove.target == "leader"
    assert join.param("timeout") == 30 and leave.param("timeout") == 30
    assert snap.target == "all"
    assert s.expect_snapshot_installed
    planned = plan(s, random.Random(1))
    assert all(p.start == p.end for p in planned)  # actions, not windows
    assert planned[0].label() == "join a spare"
    with pytest.raises(ScenarioError, match=r"cluster\.spares"):
        parse({**MINIMAL, "fault": [{"kind": "join"}]})
    with pytest.raises(ScenarioError, match="one node"):
        parse({**MINIMAL, "fault": [{"kind": "leave", "target": "all"}]})
    with pytest.raises(ScenarioError, match=r"expect\.snapshot_install: unknown"):
        parse({**MINIMAL, "expect": {"snapshot_install": True}})


def test_a_state_backend_and_the_wipe_fault(tmp_path: pathlib.Path) -> None:
    s = parse(
        {
            **MINIMAL,
            "cluster": {"backend": "lmdb"},
            "fault": [{"kind": "wipe", "target": "follower", "at": 3}],
        }
    )
    assert s.cluster.backend == "lmdb"
    (wipe,) = plan(s, random.Random(1))
    assert wipe.start == wipe.end == 3 and wipe.spec.param("timeout") == 60
    assert parse(dict(MINIMAL)).cluster.backend is None  # the node's default
    with pytest.raises(ScenarioError, match=r"cluster\.backend: one of memory, lmdb"):
        parse({**MINIMAL, "cluster": {"backend": "disk"}})
    # The nodes' configs carry it (and load with it).
    cluster = LocalCluster.with_free_ports(tmp_path, size=1, state_backend="lmdb")
    cluster.write_configs()
    config = load_config(cluster.nodes[0].config_path)
    assert config.state_backend == "lmdb"
    cluster = LocalCluster.with_free_ports(tmp_path / "default", size=1)
    cluster.write_configs()
    assert "[state]" not in cluster.nodes[0].config_path.read_text()


def test_plan_is_seeded_and_bounded() -> None:
    s = parse(
        {
            **MINIMAL,
            "duration": 60,
            "fault": [
                {"kind": "kill", "at": [1, 3], "duration": [2, 4], "every": [8, 12]},
                {"kind": "pause", "at": 10, "duration": 2, "every": 5, "count": 2},
                {"kind": "reset", "at": 50, "duration": 30},
            ],
        }
    )
    a = plan(s, random.Random(3))
    assert a == plan(s, random.Random(3))
    assert a != plan(s, random.Random(4))
    kills = [p for p in a if p.kind == "kill"]
    assert 4 <= len(kills) <= 8
    for first, second in itertools.pairwise(kills):
        assert second.start > first.end  # occurrences of one entry never overlap
    assert all(p.end <= 60 for p in a)
    assert len([p for p in a if p.kind == "pause"]) == 2
    (reset,) = [p for p in a if p.kind == "reset"]
    assert reset.start == reset.end == 50  # instantaneous
    assert [p.start for p in a] == sorted(p.start for p in a)
    assert [p.index for p in a] == list(range(len(a)))


def test_every_shipped_scenario_loads() -> None:
    paths = find_scenarios(SCENARIOS)
    names = {p.stem for p in paths}
    required = {
        "leader-kill",
        "leader-pause",
        "minority-partition",
        "leader-in-minority-partition",
        "bridge-partition",
        "flapping-partition",
        "lossy-slow-network",
        "full-cluster-restart",
        "rolling-restart",
        "join-and-leave-under-load",
        "snapshot-install-under-faults",
        "smoke",
        "reconcile-leader-kill",
        "leader-pause-pinned",
        "wipe-and-rejoin",
        "join-via-leaving-member",
    }
    assert required <= names
    for path in paths:
        s = load(path)
        assert s.name == path.stem
        assert s.description
        assert plan(s, random.Random(s.seed))
    assert load(SCENARIOS / "leader-pause-pinned.toml").workload.pin
    joins = [f for f in load(SCENARIOS / "join-via-leaving-member.toml").faults if f.kind == "join"]
    assert [(f.target, f.param("via_leaves")) for f in joins] == [("follower", True)]


def test_a_scale_table_and_its_verdict_checks() -> None:
    s = parse({"name": "s", "duration": 10, "scale": {"replicas": 6, "machines": 3, "down": 1,
                                                      "kill_leader_after": 2}})  # fmt: skip
    assert s.scale is not None
    assert (s.scale.replicas, s.scale.down_ids(), s.scale.kill_leader_after) == (6, ["m3"], 2)
    assert parse({"name": "plain"}).scale is None
    for bad, message in (
        ({"replicas": -1}, "scale.replicas"),
        ({"down": 3, "machines": 3}, "scale.down"),
        ({"at": 10}, "scale.at"),
        ({"bogus": 1}, "scale.bogus: unknown key"),
    ):
        with pytest.raises(ScenarioError, match=message):
            parse({"name": "s", "duration": 10, "scale": bad})
    spec = s.scale

    def inst(i: int, node: str) -> dict[str, object]:
        return {"id": f"i{i}", "node_id": node}

    good = [inst(i, ("m1", "m2")[i % 2]) for i in range(6)]
    assert judge(spec, good, converged=True) == []
    # Each check can fail: too few, too many, repeated ids, on the down machine, a stranger,
    # not converged.
    assert "5 instances" in judge(spec, good[:5], converged=True)[0]
    assert "7 instances" in judge(spec, [*good, inst(9, "m1")], converged=True)[0]
    assert judge(spec, [*good[:5], inst(0, "m1")], converged=True) == ["instance ids repeat"]
    assert "on a down machine" in judge(spec, [*good[:5], inst(7, "m3")], converged=True)[0]
    assert "not on a registered" in judge(spec, [*good[:5], inst(7, "m9")], converged=True)[0]
    assert "did not converge" in judge(spec, good, converged=False)[0]


def test_the_startup_wait_keeps_the_leader_it_found() -> None:
    # scripts/chaos on a loaded machine: a new leader stepped down by CheckQuorum 0.27 s after
    # its election and the runner, asking again after its wait loop had seen it, reported "no
    # leader after starting the cluster" (minority-partition, 2026-12-03).
    answers = iter([None, "n2", None, None])

    async def leader_of() -> str | None:
        return next(answers)

    async def main() -> str | None:
        return await wait_for_leader(leader_of, lambda: True, timeout=5.0, every=0.0)

    assert trio.run(main) == "n2"


def test_the_startup_wait_gives_up_when_no_node_runs_or_in_time() -> None:
    async def never() -> str | None:
        return None

    async def main(running: bool) -> str | None:
        return await wait_for_leader(never, lambda: running, timeout=0.05, every=0.01)

    assert trio.run(main, False) is None
    assert trio.run(main, True) is None
