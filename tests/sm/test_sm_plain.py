"""Plain-data converters: round trips (also through CBOR), the one table, strict decoding."""

from __future__ import annotations

from typing import Any

import attrs
import cbor2
import pytest

from tests.sm.helpers import node_info, spec
from univrs.sm import (
    COMMAND_TYPES,
    BootstrapToken,
    CloseSession,
    Command,
    Created,
    CreateInstance,
    CreateToken,
    CreateWorkload,
    DecodeError,
    DeleteInstance,
    DeleteWorkload,
    DeregisterNode,
    Envelope,
    ErrorCode,
    Failure,
    InstanceSpec,
    InstanceStatus,
    MintCredits,
    NodeStatus,
    OpenSession,
    RegisterNode,
    Response,
    RevokeToken,
    ScaleWorkload,
    Success,
    TransferCredits,
    UpdateInstanceStatus,
    UpdateNodeStatus,
    UpdateWorkload,
    command_from_plain,
    command_to_plain,
    envelope_from_plain,
    envelope_to_plain,
    response_from_plain,
    response_to_plain,
)
from univrs.sm.plain import command_fields

SAMPLES: list[Command] = [
    CreateWorkload(id="w1", spec=spec("web")),
    UpdateWorkload(id="w1", spec=spec("web", replicas=0), expected_version=3),
    UpdateWorkload(id="w1", spec=spec("web")),
    DeleteWorkload(id="w1", expected_version=0),
    ScaleWorkload(id="w1", replicas=4),
    CreateInstance(id="i1", spec=InstanceSpec(workload_id="w1", node_id="n1")),
    CreateInstance(id="i1", spec=InstanceSpec(workload_id="w1")),
    UpdateInstanceStatus(
        id="i1", status=InstanceStatus.FAILED, message="oom", node_id="n1", expected_version=9
    ),
    DeleteInstance(id="i1"),
    RegisterNode(info=node_info("n1"), status=NodeStatus.DRAINING),
    UpdateNodeStatus(id="n1", status=NodeStatus.DOWN),
    DeregisterNode(id="n1", expected_version=2),
    TransferCredits(from_peer="a", to_peer="b", amount=2**63 - 1),
    MintCredits(to_peer="a", amount=5, reason="genesis"),
    OpenSession(),
    OpenSession(owner="token:t1"),
    CloseSession(client_id="c7"),
    CreateToken(id="t1", name="ci", roles=("read", "write"), secret_hash="ab" * 32),
    BootstrapToken(id="t0", name="root", secret_hash="cd" * 32),
    RevokeToken(id="t1"),
]
RESPONSES: list[Response] = [
    Success(version=3),
    Created(id="w1", version=4),
    Failure(code=ErrorCode.VERSION_CONFLICT, message="m", current_version=2),
    Failure(code=ErrorCode.NOT_FOUND, message="gone"),
]


def test_samples_cover_every_command_type() -> None:
    assert {type(c) for c in SAMPLES} == set(COMMAND_TYPES)


def test_the_table_encodes_exactly_the_attrs_fields() -> None:
    for cls in COMMAND_TYPES:
        assert command_fields(cls) == tuple(f.name for f in attrs.fields(cls)), cls


@pytest.mark.parametrize("command", SAMPLES, ids=lambda c: type(c).__name__)
def test_command_round_trip_through_cbor(command: Command) -> None:
    plain = command_to_plain(command)
    assert command_from_plain(cbor2.loads(cbor2.dumps(plain))) == command
    envelope = Envelope(command=command, client_id="c1", seq=12)
    assert envelope_from_plain(cbor2.loads(cbor2.dumps(envelope_to_plain(envelope)))) == envelope


@pytest.mark.parametrize("response", RESPONSES, ids=repr)
def test_response_round_trip_through_cbor(response: Response) -> None:
    assert response_from_plain(cbor2.loads(cbor2.dumps(response_to_plain(response)))) == response


def test_plain_form_is_stable() -> None:
    """The exact form: changing it needs a new COMMAND_FORMAT_VERSION."""
    command = CreateWorkload(id="w1", spec=spec("web"))
    assert envelope_to_plain(Envelope(command=command)) == {
        "v": 1,
        "command": {
            "type": "create-workload",
            "id": "w1",
            "spec": {
                "name": "web",
                "image": "nginx:1.25",
                "replicas": 2,
                "args": ["--port", "80"],
                "env": [["LOG", "info"], ["MODE", "prod"]],
                "labels": [["app", "web"]],
                "resources": {"cpu_millis": 250, "memory_bytes": 134217728},
                "ports": [{"container_port": 80, "protocol": "tcp", "name": "http"}],
            },
        },
    }
    # Optional fields that are None are left out.
    assert command_to_plain(DeleteInstance(id="i1")) == {"type": "delete-instance", "id": "i1"}
    assert envelope_to_plain(Envelope(command=OpenSession(), client_id="c1", seq=2)) == {
        "v": 1,
        "command": {"type": "open-session"},
        "client_id": "c1",
        "seq": 2,
    }


def test_env_with_duplicate_keys_survives_encoding_to_be_refused_by_apply() -> None:
    command = CreateWorkload(id="w1", spec=spec("web", env=[("A", "1"), ("A", "2")]))
    decoded = command_from_plain(command_to_plain(command))
    assert isinstance(decoded, CreateWorkload)
    assert decoded.spec.env == (("A", "1"), ("A", "2"))


def good() -> dict[str, Any]:
    return envelope_to_plain(Envelope(command=CreateWorkload(id="w1", spec=spec("web"))))


def mutate(path: list[Any], value: Any, *, delete: bool = False) -> dict[str, Any]:
    doc = good()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


BAD: list[Any] = [
    ("not a map", [1, 2], "envelope"),
    ("unknown version", mutate(["v"], 2), "envelope.v"),
    ("bool version", mutate(["v"], True), "envelope.v"),
    ("missing command", mutate(["command"], None, delete=True), "missing key 'command'"),
    ("unknown top key", mutate(["extra"], 1), "unknown key 'extra'"),
    ("client id bytes", mutate(["client_id"], b"c1"), "envelope.client_id"),
    ("seq str", mutate(["seq"], "1"), "envelope.seq"),
    ("unknown type", mutate(["command", "type"], "drop-table"), "envelope.command.type"),
    ("type missing", mutate(["command", "type"], None, delete=True), "envelope.command.type"),
    ("unknown field", mutate(["command", "force"], True), "unknown key 'force'"),
    ("missing id", mutate(["command", "id"], None, delete=True), "missing key 'id'"),
    ("id int", mutate(["command", "id"], 1), "envelope.command.id"),
    ("replicas bool", mutate(["command", "spec", "replicas"], True), "spec.replicas"),
    ("replicas float", mutate(["command", "spec", "replicas"], 2.0), "spec.replicas"),
    ("replicas str", mutate(["command", "spec", "replicas"], "2"), "spec.replicas"),
    ("name bytes", mutate(["command", "spec", "name"], b"web"), "spec.name"),
    ("args not list", mutate(["command", "spec", "args"], "x"), "spec.args"),
    ("arg int", mutate(["command", "spec", "args"], [1]), "spec.args[0]"),
    ("env map", mutate(["command", "spec", "env"], {"A": "1"}), "spec.env"),
    ("env triple", mutate(["command", "spec", "env"], [["A", "1", "x"]]), "spec.env[0]"),
    ("env value int", mutate(["command", "spec", "env"], [["A", 1]]), "spec.env[0][1]"),
    ("resources list", mutate(["command", "spec", "resources"], [1, 2]), "spec.resources"),
    ("cpu none", mutate(["command", "spec", "resources", "cpu_millis"], None), "cpu_millis"),
    ("protocol", mutate(["command", "spec", "ports", 0, "protocol"], "icmp"), "protocol"),
    ("port extra", mutate(["command", "spec", "ports", 0, "host"], 1), "unknown key 'host'"),
]


@pytest.mark.parametrize(("doc", "where"), [pytest.param(d, w, id=n) for n, d, w in BAD])
def test_strict_decoding_names_the_bad_value(doc: Any, where: str) -> None:
    with pytest.raises(DecodeError) as info:
        envelope_from_plain(doc)
    assert where in str(info.value)


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "update-instance-status", "id": "i", "status": "exploded", "message": ""},
        {"type": "register-node", "info": {"id": "n"}, "status": "ready"},
        {"type": "open-session", "client_id": "c1"},
        {"type": "mint-credits", "to_peer": "a", "amount": 1},
        "create-workload",
    ],
)
def test_strict_command_decoding(doc: Any) -> None:
    with pytest.raises(DecodeError):
        command_from_plain(doc)


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "success"},
        {"type": "success", "version": -1},
        {"type": "created", "id": 3, "version": 1},
        {"type": "failure", "code": "teapot", "message": "m"},
        {"type": "failure", "code": "not-found", "message": "m", "current_version": "1"},
        {"type": "weird"},
        None,
    ],
)
def test_strict_response_decoding(doc: Any) -> None:
    with pytest.raises(DecodeError):
        response_from_plain(doc)


def test_encoding_refuses_what_is_not_a_command_or_response() -> None:
    with pytest.raises(TypeError):
        command_to_plain(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        response_to_plain("ok")  # type: ignore[arg-type]
