"""Table tests: every command, every error, and what a rejected command leaves unchanged."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from tests.sm.helpers import Log, contents, node_info, spec
from univrs.sm import (
    CloseSession,
    Created,
    CreateInstance,
    CreateWorkload,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    ErrorCode,
    Failure,
    InstanceSpec,
    InstanceStatus,
    MintCredits,
    NodeStatus,
    OpenSession,
    Port,
    PortProtocol,
    RegisterNode,
    Resources,
    ScaleWorkload,
    Success,
    TransferCredits,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    UpdateWorkload,
)
from univrs.sm.validate import MAX_QUANTITY, MAX_REPLICAS

OK, CREATED = "ok", "created"
NF, AE, IA = ErrorCode.NOT_FOUND, ErrorCode.ALREADY_EXISTS, ErrorCode.INVALID_ARGUMENT
IC, VC = ErrorCode.INSUFFICIENT_CREDITS, ErrorCode.VERSION_CONFLICT
R, P, F = InstanceStatus.RUNNING, InstanceStatus.PENDING, InstanceStatus.FAILED


def world() -> Log:
    """w1 (v1); nodes n1 ready (v2), n2 draining (v3), n3 down (v4); instances i1 on n1 (v5),
    i2 unscheduled (v6), i3 on n1 failed (v8); alice has 100 credits (index 9)."""
    log = Log()
    setup = [
        CreateWorkload(id="w1", spec=spec("web")),
        RegisterNode(info=node_info("n1")),
        RegisterNode(info=node_info("n2"), status=NodeStatus.DRAINING),
        RegisterNode(info=node_info("n3"), status=NodeStatus.DOWN),
        CreateInstance(id="i1", spec=InstanceSpec(workload_id="w1", node_id="n1")),
        CreateInstance(id="i2", spec=InstanceSpec(workload_id="w1")),
        CreateInstance(id="i3", spec=InstanceSpec(workload_id="w1", node_id="n1")),
        UpdateInstanceStatus(id="i3", status=F, message="exit 1"),
        MintCredits(to_peer="alice", amount=100, reason="genesis"),
    ]
    for command in setup:
        assert not isinstance(log(command), Failure), command
    return log


def ws(**overrides: Any) -> Any:
    return spec(**{"name": "web", **overrides})


CASES: list[Any] = [
    # ---- CreateWorkload
    ("create workload", CreateWorkload(id="w2", spec=ws()), CREATED),
    (
        "create workload minimal",
        CreateWorkload(id="w2", spec=ws(args=(), env={}, ports=())),
        CREATED,
    ),
    ("create workload zero replicas", CreateWorkload(id="w2", spec=ws(replicas=0)), CREATED),
    ("create workload exists", CreateWorkload(id="w1", spec=ws()), AE),
    ("create workload empty id", CreateWorkload(id="", spec=ws()), IA),
    ("create workload id with slash", CreateWorkload(id="a/b", spec=ws()), IA),
    ("create workload id with space", CreateWorkload(id="a b", spec=ws()), IA),
    ("create workload id too long", CreateWorkload(id="x" * 129, spec=ws()), IA),
    ("create workload id not str", CreateWorkload(id=7, spec=ws()), IA),  # type: ignore[arg-type]
    ("create workload upper name", CreateWorkload(id="w2", spec=ws(name="Web")), IA),
    ("create workload name dash", CreateWorkload(id="w2", spec=ws(name="-web")), IA),
    ("create workload empty name", CreateWorkload(id="w2", spec=ws(name="")), IA),
    ("create workload empty image", CreateWorkload(id="w2", spec=ws(image="")), IA),
    ("create workload image space", CreateWorkload(id="w2", spec=ws(image="a b")), IA),
    ("create workload negative replicas", CreateWorkload(id="w2", spec=ws(replicas=-1)), IA),
    (
        "create workload huge replicas",
        CreateWorkload(id="w2", spec=ws(replicas=MAX_REPLICAS + 1)),
        IA,
    ),
    ("create workload bool replicas", CreateWorkload(id="w2", spec=ws(replicas=True)), IA),
    ("create workload dup env", CreateWorkload(id="w2", spec=ws(env=[("A", "1"), ("A", "2")])), IA),
    ("create workload bad env key", CreateWorkload(id="w2", spec=ws(env={"1A": "x"})), IA),
    ("create workload NUL env", CreateWorkload(id="w2", spec=ws(env={"A": "\x00"})), IA),
    ("create workload bad label", CreateWorkload(id="w2", spec=ws(labels={"-a": "x"})), IA),
    (
        "create workload neg cpu",
        CreateWorkload(id="w2", spec=ws(resources=Resources(cpu_millis=-1))),
        IA,
    ),
    (
        "create workload port 0",
        CreateWorkload(id="w2", spec=ws(ports=[Port(container_port=0)])),
        IA,
    ),
    (
        "create workload port big",
        CreateWorkload(id="w2", spec=ws(ports=[Port(container_port=65536)])),
        IA,
    ),
    (
        "create workload dup port",
        CreateWorkload(id="w2", spec=ws(ports=[Port(container_port=80), Port(container_port=80)])),
        IA,
    ),
    (
        "create workload same port two protocols",
        CreateWorkload(
            id="w2",
            spec=ws(
                ports=[Port(container_port=53), Port(container_port=53, protocol=PortProtocol.UDP)]
            ),
        ),
        CREATED,
    ),
    ("create workload spec not a spec", CreateWorkload(id="w2", spec="web"), IA),  # type: ignore[arg-type]
    # ---- UpdateWorkload
    ("update workload", UpdateWorkload(id="w1", spec=ws(image="nginx:2")), OK),
    ("update workload expected ok", UpdateWorkload(id="w1", spec=ws(), expected_version=1), OK),
    ("update workload conflict", UpdateWorkload(id="w1", spec=ws(), expected_version=2), VC),
    ("update workload missing", UpdateWorkload(id="w9", spec=ws()), NF),
    ("update workload bad spec", UpdateWorkload(id="w1", spec=ws(replicas=-3)), IA),
    ("update workload bad version", UpdateWorkload(id="w1", spec=ws(), expected_version=-1), IA),
    # ---- ScaleWorkload
    ("scale workload", ScaleWorkload(id="w1", replicas=5), OK),
    ("scale workload to zero", ScaleWorkload(id="w1", replicas=0), OK),
    ("scale workload expected ok", ScaleWorkload(id="w1", replicas=5, expected_version=1), OK),
    ("scale workload conflict", ScaleWorkload(id="w1", replicas=5, expected_version=9), VC),
    ("scale workload missing", ScaleWorkload(id="w9", replicas=5), NF),
    ("scale workload negative", ScaleWorkload(id="w1", replicas=-1), IA),
    # ---- DeleteWorkload
    ("delete workload", DeleteWorkload(id="w1"), OK),
    ("delete workload expected ok", DeleteWorkload(id="w1", expected_version=1), OK),
    ("delete workload conflict", DeleteWorkload(id="w1", expected_version=0), VC),
    ("delete workload missing", DeleteWorkload(id="w9"), NF),
    ("delete workload id not str", DeleteWorkload(id=["w1"]), IA),  # type: ignore[arg-type]
    # ---- CreateInstance
    (
        "create instance unscheduled",
        CreateInstance(id="i9", spec=InstanceSpec(workload_id="w1")),
        CREATED,
    ),
    (
        "create instance on node",
        CreateInstance(id="i9", spec=InstanceSpec(workload_id="w1", node_id="n1")),
        CREATED,
    ),
    ("create instance exists", CreateInstance(id="i1", spec=InstanceSpec(workload_id="w1")), AE),
    (
        "create instance no workload",
        CreateInstance(id="i9", spec=InstanceSpec(workload_id="w9")),
        NF,
    ),
    (
        "create instance no node",
        CreateInstance(id="i9", spec=InstanceSpec(workload_id="w1", node_id="n9")),
        NF,
    ),
    (
        "create instance draining node",
        CreateInstance(id="i9", spec=InstanceSpec(workload_id="w1", node_id="n2")),
        IA,
    ),
    (
        "create instance down node",
        CreateInstance(id="i9", spec=InstanceSpec(workload_id="w1", node_id="n3")),
        IA,
    ),
    ("create instance bad id", CreateInstance(id="", spec=InstanceSpec(workload_id="w1")), IA),
    (
        "create instance bad workload id",
        CreateInstance(id="i9", spec=InstanceSpec(workload_id="")),
        IA,
    ),
    # ---- UpdateInstanceStatus
    ("instance running", UpdateInstanceStatus(id="i1", status=R), OK),
    ("instance running expected", UpdateInstanceStatus(id="i1", status=R, expected_version=5), OK),
    ("instance conflict", UpdateInstanceStatus(id="i1", status=R, expected_version=4), VC),
    ("instance missing", UpdateInstanceStatus(id="i9", status=R), NF),
    ("instance unscheduled cannot run", UpdateInstanceStatus(id="i2", status=R), IA),
    (
        "instance unscheduled may fail",
        UpdateInstanceStatus(id="i2", status=F, message="no fit"),
        OK,
    ),
    ("instance bind and run", UpdateInstanceStatus(id="i2", status=R, node_id="n1"), OK),
    ("instance bind pending", UpdateInstanceStatus(id="i2", status=P, node_id="n1"), OK),
    ("instance bind draining", UpdateInstanceStatus(id="i2", status=P, node_id="n2"), IA),
    ("instance bind unknown node", UpdateInstanceStatus(id="i2", status=P, node_id="n9"), NF),
    ("instance same node ok", UpdateInstanceStatus(id="i1", status=R, node_id="n1"), OK),
    ("instance does not move", UpdateInstanceStatus(id="i1", status=R, node_id="n2"), IA),
    ("instance terminal stays", UpdateInstanceStatus(id="i3", status=R), IA),
    ("instance terminal same status", UpdateInstanceStatus(id="i3", status=F, message="again"), OK),
    ("instance message too long", UpdateInstanceStatus(id="i1", status=R, message="x" * 5000), IA),
    ("instance bad status", UpdateInstanceStatus(id="i1", status="running"), IA),  # type: ignore[arg-type]
    # ---- DeleteInstance
    ("delete instance", DeleteInstance(id="i1"), OK),
    ("delete instance unscheduled", DeleteInstance(id="i2"), OK),
    ("delete instance expected ok", DeleteInstance(id="i1", expected_version=5), OK),
    ("delete instance conflict", DeleteInstance(id="i1", expected_version=6), VC),
    ("delete instance missing", DeleteInstance(id="i9"), NF),
    # ---- RegisterNode
    ("register node", RegisterNode(info=node_info("n9")), CREATED),
    (
        "register node not ready",
        RegisterNode(info=node_info("n9"), status=NodeStatus.NOT_READY),
        CREATED,
    ),
    ("register node exists", RegisterNode(info=node_info("n1")), AE),
    ("register node bad id", RegisterNode(info=node_info("n 9")), IA),
    ("register node bad address", RegisterNode(info=node_info("n9", addresses=("a b",))), IA),
    ("register node empty address", RegisterNode(info=node_info("n9", addresses=("",))), IA),
    (
        "register node negative capacity",
        RegisterNode(info=node_info("n9", capacity=Resources(memory_bytes=-1))),
        IA,
    ),
    ("register node bad status", RegisterNode(info=node_info("n9"), status="up"), IA),  # type: ignore[arg-type]
    # ---- UpdateNodeStatus
    ("node status", UpdateNodeStatus(id="n1", status=NodeStatus.NOT_READY), OK),
    (
        "node status expected",
        UpdateNodeStatus(id="n1", status=NodeStatus.DOWN, expected_version=2),
        OK,
    ),
    (
        "node status conflict",
        UpdateNodeStatus(id="n1", status=NodeStatus.DOWN, expected_version=1),
        VC,
    ),
    ("node status missing", UpdateNodeStatus(id="n9", status=NodeStatus.DOWN), NF),
    ("node status bad", UpdateNodeStatus(id="n1", status="gone"), IA),  # type: ignore[arg-type]
    # ---- DeregisterNode
    ("deregister node", DeregisterNode(id="n1"), OK),
    ("deregister node expected", DeregisterNode(id="n1", expected_version=2), OK),
    ("deregister node conflict", DeregisterNode(id="n1", expected_version=3), VC),
    ("deregister node missing", DeregisterNode(id="n9"), NF),
    # ---- TransferCredits
    ("transfer", TransferCredits(from_peer="alice", to_peer="bob", amount=40), OK),
    ("transfer everything", TransferCredits(from_peer="alice", to_peer="bob", amount=100), OK),
    ("transfer too much", TransferCredits(from_peer="alice", to_peer="bob", amount=101), IC),
    ("transfer from empty", TransferCredits(from_peer="carol", to_peer="bob", amount=1), IC),
    ("transfer to self", TransferCredits(from_peer="alice", to_peer="alice", amount=1), IA),
    ("transfer zero", TransferCredits(from_peer="alice", to_peer="bob", amount=0), IA),
    ("transfer negative", TransferCredits(from_peer="alice", to_peer="bob", amount=-5), IA),
    ("transfer bool", TransferCredits(from_peer="alice", to_peer="bob", amount=True), IA),
    ("transfer float", TransferCredits(from_peer="alice", to_peer="bob", amount=1.0), IA),  # type: ignore[arg-type]
    ("transfer bad peer", TransferCredits(from_peer="alice", to_peer="", amount=1), IA),
    # ---- MintCredits
    ("mint", MintCredits(to_peer="bob", amount=5, reason="reward"), OK),
    ("mint max", MintCredits(to_peer="bob", amount=MAX_QUANTITY - 100, reason="all"), OK),
    ("mint overflow", MintCredits(to_peer="bob", amount=MAX_QUANTITY - 99, reason="too much"), IA),
    ("mint zero", MintCredits(to_peer="bob", amount=0, reason="nothing"), IA),
    ("mint negative", MintCredits(to_peer="bob", amount=-1, reason="burn"), IA),
    ("mint no reason", MintCredits(to_peer="bob", amount=5, reason=""), IA),
    ("mint blank reason", MintCredits(to_peer="bob", amount=5, reason="   "), IA),
    ("mint reason too long", MintCredits(to_peer="bob", amount=5, reason="x" * 1025), IA),
    ("mint bad peer", MintCredits(to_peer="b/b", amount=5, reason="r"), IA),
    # ---- sessions and garbage
    ("open session", OpenSession(), CREATED),
    ("close unknown session", CloseSession(client_id="c1"), OK),
    ("close session bad id", CloseSession(client_id=""), IA),
    ("not a command", object(), IA),
    ("object as id", CreateWorkload(id=object(), spec=ws()), IA),  # type: ignore[arg-type]
    ("object as status", UpdateNodeStatus(id="n1", status=object()), IA),  # type: ignore[arg-type]
    ("object as port", CreateWorkload(id="w2", spec=ws(ports=[Port(container_port=object())])), IA),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("command", "expected"), [pytest.param(c, e, id=n) for n, c, e in CASES])
def test_command_table(command: Any, expected: Any) -> None:
    log = world()
    before = contents(log.sm)
    response = log(command)
    index = log.index
    if expected == OK:
        assert response == Success(version=index)
    elif expected == CREATED:
        assert isinstance(response, Created)
        assert response.version == index
    else:
        assert isinstance(response, Failure), response
        assert response.code == expected, response.message
        assert response.message
        assert " at 0x" not in response.message  # no memory address: replicas must agree
        # A rejected command changes nothing (only the log position moved).
        assert contents(log.sm) == before
    assert log.sm.problems() == []


def test_case_names_are_unique() -> None:
    names = [n for n, _, _ in CASES]
    assert len(names) == len(set(names))


def test_every_error_code_of_the_issue_is_exercised() -> None:
    exercised = {e for _, _, e in CASES}
    assert {NF, AE, IA, IC, VC, OK, CREATED} <= exercised


def test_version_conflict_reports_the_current_version() -> None:
    log = world()
    response = log(ScaleWorkload(id="w1", replicas=3, expected_version=7))
    assert response == Failure(
        code=VC, message="expected version 7, current version is 1", current_version=1
    )


def test_versions_follow_the_log_index() -> None:
    log = world()
    w = log.sm.get_workload("w1")
    assert w is not None and (w.version, w.created_index, w.updated_index) == (1, 1, 1)
    log(ScaleWorkload(id="w1", replicas=7))
    log(UpdateWorkload(id="w1", spec=ws(image="nginx:2", replicas=7), expected_version=10))
    w = log.sm.get_workload("w1")
    assert w is not None
    assert (w.version, w.created_index, w.spec.image, w.spec.replicas) == (11, 1, "nginx:2", 7)
    # A stale expected version now conflicts; the right one succeeds.
    assert isinstance(log(ScaleWorkload(id="w1", replicas=1, expected_version=10)), Failure)
    assert log(ScaleWorkload(id="w1", replicas=1, expected_version=11)) == Success(version=13)
    node = log.sm.get_node("n1")
    assert node is not None and node.version == 2
    log(UpdateNodeStatus(id="n1", status=NodeStatus.NOT_READY))
    node = log.sm.get_node("n1")
    assert node is not None and (node.version, node.created_index, node.updated_index) == (
        14,
        2,
        14,
    )
    instance = log.sm.get_instance("i1")
    assert instance is not None and (instance.version, instance.created_index) == (5, 5)
    log(UpdateInstanceStatus(id="i1", status=R, message="started"))
    instance = log.sm.get_instance("i1")
    assert instance is not None
    assert (instance.status, instance.message, instance.version, instance.updated_index) == (
        R,
        "started",
        15,
        15,
    )


def test_instance_changes_do_not_bump_the_workload_version() -> None:
    log = world()
    log(UpdateInstanceStatus(id="i1", status=R))
    w = log.sm.get_workload("w1")
    assert w is not None and w.version == 1
    assert log(ScaleWorkload(id="w1", replicas=3, expected_version=1)) == Success(version=11)


def test_delete_workload_cascades_to_its_instances() -> None:
    log = world()
    log(CreateWorkload(id="w2", spec=spec("api")))
    log(CreateInstance(id="j1", spec=InstanceSpec(workload_id="w2", node_id="n1")))
    assert log(DeleteWorkload(id="w1")) == Success(version=12)
    assert [i.id for i in log.sm.list_instances()] == ["j1"]
    assert [i.id for i in log.sm.list_instances(node_id="n1")] == ["j1"]
    assert log.sm.list_instances(workload_id="w1") == []
    assert log.sm.get_workload("w1") is None
    assert log.sm.problems() == []
    # The id is free again: a new workload may take it, with no instances of the old one.
    assert isinstance(log(CreateWorkload(id="w1", spec=spec("web"))), Created)
    assert log.sm.list_instances(workload_id="w1") == []


def test_deregister_node_deletes_the_instances_placed_on_it() -> None:
    log = world()
    log(UpdateInstanceStatus(id="i2", status=P, node_id="n1"))  # bind i2 to n1
    log(RegisterNode(info=node_info("n4")))
    log(CreateInstance(id="i4", spec=InstanceSpec(workload_id="w1", node_id="n4")))
    assert log(DeregisterNode(id="n1")) == Success(version=log.index)
    assert [i.id for i in log.sm.list_instances()] == ["i4"]
    assert log.sm.list_instances(node_id="n1") == []
    assert log.sm.get_node("n1") is None
    assert log.sm.problems() == []
    w = log.sm.get_workload("w1")
    assert w is not None and w.version == 1  # the workload itself is untouched


def test_node_down_turns_live_instances_unknown() -> None:
    log = world()
    log(UpdateInstanceStatus(id="i1", status=R))  # 10
    log(CreateInstance(id="i4", spec=InstanceSpec(workload_id="w1", node_id="n1")))  # 11, pending
    assert log(UpdateNodeStatus(id="n1", status=NodeStatus.DOWN)) == Success(version=12)
    by_id = {i.id: i for i in log.sm.list_instances(node_id="n1")}
    assert {k: (v.status, v.version) for k, v in by_id.items()} == {
        "i1": (InstanceStatus.UNKNOWN, 12),
        "i3": (F, 8),  # terminal: unchanged
        "i4": (InstanceStatus.UNKNOWN, 12),
    }
    assert by_id["i1"].message == "node n1 is down"
    # Down again: no further change. Back to ready: instances stay unknown until reported.
    log(UpdateNodeStatus(id="n1", status=NodeStatus.DOWN))
    log(UpdateNodeStatus(id="n1", status=NodeStatus.READY))
    instance = log.sm.get_instance("i1")
    assert instance is not None and (instance.status, instance.version) == (
        InstanceStatus.UNKNOWN,
        12,
    )
    assert log(UpdateInstanceStatus(id="i1", status=R)) == Success(version=15)


def test_workload_status_is_derived_from_instances() -> None:
    log = world()  # w1 wants 2: i1 pending, i2 pending, i3 failed
    w = log.sm.get_workload("w1")
    assert w is not None
    assert attrs.asdict(w.status) == {
        "phase": "degraded",
        "desired": 2,
        "pending": 2,
        "running": 0,
        "succeeded": 0,
        "failed": 1,
        "unknown": 0,
    }
    log(DeleteInstance(id="i3"))
    w = log.sm.get_workload("w1")
    assert w is not None and w.status.phase == "progressing"
    log(UpdateInstanceStatus(id="i1", status=R))
    log(UpdateInstanceStatus(id="i2", status=R, node_id="n1"))
    w = log.sm.get_workload("w1")
    assert w is not None and (w.status.phase, w.status.running) == ("ready", 2)


def test_lists_are_sorted_and_filtered() -> None:
    log = world()
    log(CreateWorkload(id="a0", spec=spec("alpha")))
    log(CreateInstance(id="a1", spec=InstanceSpec(workload_id="a0", node_id="n1")))
    assert [w.id for w in log.sm.list_workloads()] == ["a0", "w1"]
    assert [n.id for n in log.sm.list_nodes()] == ["n1", "n2", "n3"]
    assert [i.id for i in log.sm.list_instances()] == ["a1", "i1", "i2", "i3"]
    assert [i.id for i in log.sm.list_instances(workload_id="w1")] == ["i1", "i2", "i3"]
    assert [i.id for i in log.sm.list_instances(node_id="n1")] == ["a1", "i1", "i3"]
    assert [i.id for i in log.sm.list_instances(workload_id="w1", node_id="n1")] == ["i1", "i3"]
    assert log.sm.list_instances(workload_id="nope") == []


def test_credits_ledger_rules() -> None:
    log = world()
    assert log.sm.balances() == {"alice": 100}
    log(TransferCredits(from_peer="alice", to_peer="bob", amount=100))
    # A zero balance is no account at all (one canonical form of the same balances).
    assert log.sm.balances() == {"bob": 100}
    assert (log.sm.balance("alice"), log.sm.balance("bob"), log.sm.total_supply) == (0, 100, 100)
    log(MintCredits(to_peer="alice", amount=7, reason="reward"))
    assert log.sm.total_supply == 107
    assert log.sm.statistics().accounts == 2
