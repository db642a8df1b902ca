"""Snapshots: restore(snapshot(s)) == s, a pinned version-1 snapshot, the digest, corruption."""

from __future__ import annotations

import copy
from typing import Any

import cbor2
import pytest

from tests.sm.conftest import BACKEND
from tests.sm.helpers import Log, node_info, spec
from univrs.sm import (
    ClusterStateMachine,
    CreateInstance,
    CreateWorkload,
    DecodeError,
    Envelope,
    ErrorCode,
    Failure,
    InstanceSpec,
    InstanceStatus,
    MintCredits,
    NodeStatus,
    OpenSession,
    RegisterNode,
    ScaleWorkload,
    SessionPolicy,
    TransferCredits,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    restore_plain,
    snapshot_plain,
    state_digest,
)
from univrs.sm import snapshot as snapshot_module

# A version-1 snapshot as written by the first release. Newer code must keep reading it (add a
# reader for a new version, never drop this one), and the digest of its state is pinned.
V1_SNAPSHOT: dict[str, Any] = {
    "format": "univrs-sm-snapshot",
    "version": 1,
    "last_index": 9,
    "last_term": 1,
    "clock_ms": 1500,
    "policy": {"window": 8, "max_sessions": 100, "ttl_entries": 1000, "ttl_ms": 60000},
    "workloads": [
        [
            "w1",
            1,
            1,
            "web",
            "nginx:1.25",
            2,
            250,
            134217728,
            2,
            "--port",
            "80",
            2,
            "LOG",
            "info",
            "MODE",
            "prod",
            1,
            "app",
            "web",
            1,
            80,
            "tcp",
            "http",
        ],
    ],
    "instances": [["i1", "w1", "n1", "running", "", 9, 3], ["i2", "w1", None, "pending", "", 4, 4]],
    "nodes": [["n1", "ready", 2, 2, 4000, 8589934592, 1, "10.0.0.1:7000", 1, "zone", "a"]],
    "balances": ["alice", 30, "bob", 20],
    "sessions": [
        [
            "c5",
            7,
            1500,
            2,
            2,
            1,
            {"type": "success", "version": 6},
            2,
            {
                "type": "failure",
                "code": "insufficient-credits",
                "message": "alice has 50 credits, needs 80",
            },
        ],
    ],
}
V1_DIGEST = "sha256:96d262760eb69459c4297fc2089b6b94dfac9983c9d8b28cd31b6d0a6a5bb6d1"


def build_v1_state() -> Log:
    """The commands that produced V1_SNAPSHOT."""
    policy = SessionPolicy(window=8, max_sessions=100, ttl_entries=1000, ttl_ms=60000)
    log = Log(ClusterStateMachine(policy))
    log(CreateWorkload(id="w1", spec=spec("web")), time_ms=1000)
    log(RegisterNode(info=node_info("n1")), time_ms=1001)
    log(CreateInstance(id="i1", spec=InstanceSpec(workload_id="w1", node_id="n1")))
    log(CreateInstance(id="i2", spec=InstanceSpec(workload_id="w1")))
    log(OpenSession(), time_ms=1500)
    mint = MintCredits(to_peer="alice", amount=50, reason="genesis")
    log(Envelope(command=mint, client_id="c5", seq=1))
    pay = TransferCredits(from_peer="alice", to_peer="bob", amount=80)
    log(Envelope(command=pay, client_id="c5", seq=2))
    log(TransferCredits(from_peer="alice", to_peer="bob", amount=20))
    log(UpdateInstanceStatus(id="i1", status=InstanceStatus.RUNNING))
    return log


def test_the_v1_snapshot_still_restores() -> None:
    sm = restore_plain(copy.deepcopy(V1_SNAPSHOT))
    assert sm.problems() == []
    w = sm.get_workload("w1")
    assert w is not None and w.spec == spec("web") and (w.version, w.created_index) == (1, 1)
    assert [(i.id, i.node_id, i.status) for i in sm.list_instances()] == [
        ("i1", "n1", InstanceStatus.RUNNING),
        ("i2", None, InstanceStatus.PENDING),
    ]
    node = sm.get_node("n1")
    assert node is not None and node.info == node_info("n1") and node.status == NodeStatus.READY
    assert sm.balances() == {"alice": 30, "bob": 20}
    assert sm.total_supply == 50
    assert (sm.last_applied_index, sm.last_applied_term, sm.clock_ms) == (9, 1, 1500)
    # The session's cached failure is still the answer to a retry of seq 2.
    pay = TransferCredits(from_peer="alice", to_peer="bob", amount=80)
    retry = sm.apply(Envelope(command=pay, client_id="c5", seq=2), index=10, term=1)
    assert isinstance(retry, Failure) and retry.code == ErrorCode.INSUFFICIENT_CREDITS


def test_the_v1_snapshot_is_what_the_commands_produce_and_its_digest_is_pinned() -> None:
    log = build_v1_state()
    assert snapshot_plain(log.sm) == V1_SNAPSHOT
    assert state_digest(log.sm) == V1_DIGEST
    assert state_digest(restore_plain(copy.deepcopy(V1_SNAPSHOT))) == V1_DIGEST


def populated() -> Log:
    log = build_v1_state()
    for n in range(20):
        log(CreateWorkload(id=f"w-{n}", spec=spec(f"app-{n}", replicas=n % 4)))
        log(CreateInstance(id=f"i-{n}", spec=InstanceSpec(workload_id=f"w-{n}", node_id="n1")))
        log(MintCredits(to_peer=f"p{n % 3}", amount=n + 1, reason="test"))
    log(UpdateNodeStatus(id="n1", status=NodeStatus.DOWN))
    return log


def test_restore_of_snapshot_is_the_identity_through_cbor() -> None:
    log = populated()
    data = cbor2.dumps(snapshot_plain(log.sm))
    copy_ = restore_plain(cbor2.loads(data))
    assert cbor2.dumps(snapshot_plain(copy_)) == data  # byte for byte
    assert state_digest(copy_) == state_digest(log.sm)
    assert copy_.problems() == []
    assert copy_.list_workloads() == log.sm.list_workloads()
    assert copy_.list_instances() == log.sm.list_instances()
    assert copy_.list_nodes() == log.sm.list_nodes()
    assert copy_.statistics() == log.sm.statistics()
    # Both go on the same way.
    other = Log(copy_)
    for command in [
        ScaleWorkload(id="w-3", replicas=9, expected_version=log.index),
        ScaleWorkload(id="w-3", replicas=9, expected_version=13),
        UpdateNodeStatus(id="n1", status=NodeStatus.READY),
        TransferCredits(from_peer="p1", to_peer="p2", amount=3),
    ]:
        assert log(command) == other(command)
    assert snapshot_plain(other.sm) == snapshot_plain(log.sm)


def test_empty_state_round_trip() -> None:
    sm = ClusterStateMachine()
    again = restore_plain(cbor2.loads(cbor2.dumps(snapshot_plain(sm))))
    assert snapshot_plain(again) == snapshot_plain(sm)
    assert state_digest(again) == state_digest(sm)


def test_digest_depends_on_contents_not_on_storage_order() -> None:
    log = populated()
    plain = snapshot_plain(log.sm)
    plain["workloads"].reverse()
    plain["instances"].reverse()
    plain["balances"] = plain["balances"][2:] + plain["balances"][:2]
    reordered = restore_plain(plain)
    # Every table (the ledger too, since the persistent backend) is kept in key order, so
    # the order of a snapshot's rows does not change what is restored, nor the digest.
    assert snapshot_plain(reordered) == snapshot_plain(log.sm)
    assert state_digest(reordered) == state_digest(log.sm)


def test_digest_changes_with_any_content() -> None:
    base = state_digest(populated().sm)
    for command in [
        ScaleWorkload(id="w-3", replicas=1),  # only a version (and the spec's replicas)
        TransferCredits(from_peer="p1", to_peer="p2", amount=1),
        OpenSession(),
    ]:
        log = populated()
        log(command)
        assert state_digest(log.sm) != base, command
    log = populated()
    log.sm.mark_applied(index=log.index + 1, term=1)  # only the log position moves
    assert state_digest(log.sm) != base


def corrupt(edit: Any) -> dict[str, Any]:
    doc = copy.deepcopy(V1_SNAPSHOT)
    edit(doc)
    return doc


CORRUPT: list[Any] = [
    ("not a map", [V1_SNAPSHOT]),
    ("wrong format", corrupt(lambda d: d.update(format="other"))),
    ("future version", corrupt(lambda d: d.update(version=99))),
    ("missing key", corrupt(lambda d: d.pop("nodes"))),
    ("unknown key", corrupt(lambda d: d.update(extra=1))),
    ("negative index", corrupt(lambda d: d.update(last_index=-1))),
    ("bad policy", corrupt(lambda d: d["policy"].update(window=0))),
    ("short row", corrupt(lambda d: d["instances"][0].pop())),
    ("long row", corrupt(lambda d: d["instances"][0].append(1))),
    ("bad count", corrupt(lambda d: d["workloads"][0].__setitem__(8, 5))),
    ("bad status", corrupt(lambda d: d["instances"][0].__setitem__(3, "exploded"))),
    ("bool version", corrupt(lambda d: d["instances"][0].__setitem__(5, True))),
    ("orphan instance", corrupt(lambda d: d["instances"][0].__setitem__(1, "w9"))),
    ("unknown node", corrupt(lambda d: d["instances"][0].__setitem__(2, "n9"))),
    ("duplicate workload", corrupt(lambda d: d["workloads"].append(d["workloads"][0]))),
    ("duplicate instance", corrupt(lambda d: d["instances"].append(d["instances"][0]))),
    ("duplicate node", corrupt(lambda d: d["nodes"].append(d["nodes"][0]))),
    ("zero balance", corrupt(lambda d: d["balances"].__setitem__(1, 0))),
    ("negative balance", corrupt(lambda d: d["balances"].__setitem__(1, -1))),
    ("odd balances", corrupt(lambda d: d["balances"].pop())),
    ("duplicate peer", corrupt(lambda d: d["balances"].extend(["bob", 1]))),
    ("duplicate session", corrupt(lambda d: d["sessions"].append(d["sessions"][0]))),
    ("session bad response", corrupt(lambda d: d["sessions"][0].__setitem__(6, {"type": "?"}))),
    ("session cache outside window", corrupt(lambda d: d["sessions"][0].__setitem__(3, 20))),
]


@pytest.mark.parametrize("doc", [pytest.param(d, id=n) for n, d in CORRUPT])
def test_corrupt_snapshots_are_refused(doc: Any) -> None:
    with pytest.raises(DecodeError):
        restore_plain(doc)


def test_the_pinned_snapshot_itself_is_valid() -> None:
    """So the corruption cases above fail for their edit, not for a broken base."""
    assert snapshot_plain(restore_plain(copy.deepcopy(V1_SNAPSHOT))) == V1_SNAPSHOT


def test_workload_rows_fast_and_checked_readers_agree() -> None:
    log = populated()
    log(CreateWorkload(id="bare", spec=spec("bare", args=(), env={}, labels={}, ports=())))
    rows = snapshot_plain(log.sm)["workloads"]
    assert len(rows) == 22
    for row in rows:
        fast = snapshot_module._workload_fast(row, snapshot_module._Shared())
        assert fast is not None
        assert fast == snapshot_module._workload_checked(row, "row")


ROW = V1_SNAPSHOT["workloads"][0]
BAD_ROWS: list[Any] = [
    ("short header", ROW[:5]),
    ("id int", [1, *ROW[1:]]),
    ("version negative", [ROW[0], -1, *ROW[2:]]),
    ("replicas str", [*ROW[:5], "2", *ROW[6:]]),
    ("arg count too big", [*ROW[:8], 3, *ROW[9:]]),
    ("arg count negative", [*ROW[:8], -1, *ROW[9:]]),
    ("arg int", [*ROW[:9], 7, *ROW[10:]]),
    ("env value bytes", [*ROW[:13], b"info", *ROW[14:]]),
    ("port count too big", [*ROW[:19], 2, *ROW[20:]]),
    ("port protocol", [*ROW[:21], "icmp", ROW[22]]),
    ("port number str", [*ROW[:20], "80", *ROW[21:]]),
    ("trailing item", [*ROW, "x"]),
]


@pytest.mark.parametrize("row", [pytest.param(r, id=n) for n, r in BAD_ROWS])
def test_bad_workload_rows_are_refused_by_both_readers(row: Any) -> None:
    assert snapshot_module._workload_fast(row, snapshot_module._Shared()) is None
    with pytest.raises(DecodeError):
        snapshot_module._workload_checked(row, "row")


def test_a_huge_count_in_a_corrupt_snapshot_row_is_refused_without_allocating() -> None:
    import pytest

    from univrs.sm.errors import DecodeError
    from univrs.sm.snapshot import _Row

    row = _Row([10**15, "a", "b"], "workloads[0]")  # claims 10**15 strings, holds two
    with pytest.raises(DecodeError, match="exceeds the row"):
        row.texts()
    row = _Row([10**15, "a", "b"], "workloads[0]")
    with pytest.raises(DecodeError, match="exceeds the row"):
        row.pairs()
    assert _Row([1, "k", "v"], "x").pairs() == (("k", "v"),)


def test_instance_rows_fast_and_checked_readers_agree() -> None:
    rows = snapshot_plain(populated().sm)["instances"]
    assert rows
    for row in rows:
        assert snapshot_module._instance_v1(row, "row") == snapshot_module._instance_checked(
            row, "row"
        )


IROW = V1_SNAPSHOT["instances"][0]
BAD_INSTANCE_ROWS: list[Any] = [
    ("short", IROW[:6]),
    ("long", [*IROW, 1]),
    ("id int", [1, *IROW[1:]]),
    ("node int", [*IROW[:2], 3, *IROW[3:]]),
    ("status unknown", [*IROW[:3], "exploded", *IROW[4:]]),
    ("status int", [*IROW[:3], 1, *IROW[4:]]),
    ("status list", [*IROW[:3], ["running"], *IROW[4:]]),  # unhashable: no TypeError escapes
    ("message none", [*IROW[:4], None, *IROW[5:]]),
    ("version bool", [*IROW[:5], True, IROW[6]]),
    ("created negative", [*IROW[:6], -1]),
]


@pytest.mark.parametrize("row", [pytest.param(r, id=n) for n, r in BAD_INSTANCE_ROWS])
def test_bad_instance_rows_are_refused(row: Any) -> None:
    with pytest.raises(DecodeError):
        snapshot_module._instance_v1(row, "row")


def test_plain_from_parts_is_snapshot_plain() -> None:
    sm = populated().sm
    parts = snapshot_module.plain_from_parts(
        policy=sm.policy,
        last_index=sm.last_applied_index,
        last_term=sm.last_applied_term,
        clock_ms=sm.clock_ms,
        workloads=list(sm.stored_workloads()),
        instances=list(sm.stored_instances()),
        nodes=list(sm.stored_nodes()),
        balances=list(sm.ledger_items()),
        sessions=list(sm.stored_sessions()),
    )
    assert parts == snapshot_plain(sm)


@pytest.mark.skipif(
    BACKEND == "lmdb", reason="the LMDB tables decode a row at each read: nothing to share"
)
def test_restore_shares_the_strings_that_repeat_across_rows() -> None:
    """An instance's workload id is its workload's id string and its node id one string per
    node (fails before the restore interned them: each row had its own copies)."""
    log = populated()
    copy_ = restore_plain(cbor2.loads(cbor2.dumps(snapshot_plain(log.sm))))
    workloads = {w.id: w for w in copy_.stored_workloads()}
    instances = list(copy_.stored_instances())
    assert instances
    for i in instances:
        assert i.workload_id is next(k for k in workloads if k == i.workload_id)
    node_ids = {id(i.node_id) for i in instances if i.node_id is not None}
    assert len(node_ids) == len({i.node_id for i in instances if i.node_id is not None})
    images = {w.spec.image for w in workloads.values()}
    assert len({id(w.spec.image) for w in workloads.values()}) == len(images)
