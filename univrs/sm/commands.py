"""The commands the cluster state machine applies, and the envelope that carries them.

Ids of new objects are chosen by the proposer and travel in the command (the design document's
``WorkloadId::new()`` inside ``apply`` would give every replica a different id); the only id the
state machine makes itself is a client session's, and it is derived from the log index.

``expected_version`` (optional on every update, scale and delete) makes the command conditional:
it fails with ``version-conflict`` unless the object's current version equals it.

``fence_term`` (optional on ``CreateInstance`` and ``DeleteInstance``, the reconciler's writes)
fences a leader-only decision by term: the command applies only if its log entry carries that
term, i.e. it was appended by the leader of the term in which it was decided. A decision made
by a deposed leader and appended later (by the same node leading again) fails with
``version-conflict`` instead of acting on state it never saw (docs/orchestrator.md).
"""

from __future__ import annotations

import attrs

from univrs.sm.model import InstanceSpec, InstanceStatus, NodeInfo, NodeStatus, WorkloadSpec


@attrs.frozen(kw_only=True, slots=True)
class CreateWorkload:
    """Create workload ``id``; fails with already-exists if the id is taken."""

    id: str
    spec: WorkloadSpec


@attrs.frozen(kw_only=True, slots=True)
class UpdateWorkload:
    """Replace the spec of workload ``id`` (instances are left to the reconciler)."""

    id: str
    spec: WorkloadSpec
    expected_version: int | None = None


@attrs.frozen(kw_only=True, slots=True)
class DeleteWorkload:
    """Delete workload ``id`` and, in the same step, every instance of it."""

    id: str
    expected_version: int | None = None


@attrs.frozen(kw_only=True, slots=True)
class ScaleWorkload:
    """Set the desired replica count of workload ``id``."""

    id: str
    replicas: int
    expected_version: int | None = None


@attrs.frozen(kw_only=True, slots=True)
class CreateInstance:
    """Create instance ``id`` of an existing workload, optionally on a schedulable node."""

    id: str
    spec: InstanceSpec
    fence_term: int | None = None


@attrs.frozen(kw_only=True, slots=True)
class UpdateInstanceStatus:
    """Report an instance's status; ``node_id`` binds a not-yet-scheduled instance to a node."""

    id: str
    status: InstanceStatus
    message: str = ""
    node_id: str | None = None
    expected_version: int | None = None


@attrs.frozen(kw_only=True, slots=True)
class DeleteInstance:
    """Delete instance ``id``."""

    id: str
    expected_version: int | None = None
    fence_term: int | None = None


@attrs.frozen(kw_only=True, slots=True)
class RegisterNode:
    """Register a node; fails with already-exists if its id is registered."""

    info: NodeInfo
    status: NodeStatus = NodeStatus.READY


@attrs.frozen(kw_only=True, slots=True)
class UpdateNodeStatus:
    """Set a node's status; ``down`` turns its pending and running instances ``unknown``."""

    id: str
    status: NodeStatus
    expected_version: int | None = None


@attrs.frozen(kw_only=True, slots=True)
class DeregisterNode:
    """Remove a node and, in the same step, every instance placed on it."""

    id: str
    expected_version: int | None = None


@attrs.frozen(kw_only=True, slots=True)
class TransferCredits:
    """Move ``amount`` credits from one peer to another, atomically."""

    from_peer: str
    to_peer: str
    amount: int


@attrs.frozen(kw_only=True, slots=True)
class MintCredits:
    """Create ``amount`` new credits for ``to_peer``; ``reason`` is required (audit)."""

    to_peer: str
    amount: int
    reason: str


@attrs.frozen(kw_only=True, slots=True)
class OpenSession:
    """Open a client session; the response is ``Created(id=<client id>)``.

    Must be sent without a client id and sequence number. The client id is derived from the
    log index, so an id the table does not know is certainly expired (dissertation 6.3).
    ``owner`` is who opens it (set by the serving node: the caller's token id or address),
    which bounds how many sessions one caller holds (``univrs.sm.sessions``).
    """

    owner: str | None = None


@attrs.frozen(kw_only=True, slots=True)
class CloseSession:
    """Close a client session (drop its cached responses). Sent without a client id.

    ``owner`` is the identity of the caller (as ``OpenSession.owner``): a session is closed
    only by the owner that opened it (None: no check, as entries written before owners were
    checked on close)."""

    client_id: str
    owner: str | None = None


@attrs.frozen(kw_only=True, slots=True)
class CreateToken:
    """Create API token ``id`` (``univrs.sm.tokens``); ``secret_hash`` is the SHA-256 (hex) of
    the secret the proposer chose: the secret itself never enters the log."""

    id: str
    name: str
    roles: tuple[str, ...]
    secret_hash: str


@attrs.frozen(kw_only=True, slots=True)
class BootstrapToken:
    """Create the first admin token; refused once an admin token was ever created."""

    id: str
    name: str
    secret_hash: str


@attrs.frozen(kw_only=True, slots=True)
class RevokeToken:
    """Delete API token ``id``: it authenticates nobody once applied."""

    id: str


Command = (
    CreateWorkload
    | UpdateWorkload
    | DeleteWorkload
    | ScaleWorkload
    | CreateInstance
    | UpdateInstanceStatus
    | DeleteInstance
    | RegisterNode
    | UpdateNodeStatus
    | DeregisterNode
    | TransferCredits
    | MintCredits
    | OpenSession
    | CloseSession
    | CreateToken
    | BootstrapToken
    | RevokeToken
)

COMMAND_TYPES: tuple[type[Command], ...] = (
    CreateWorkload,
    UpdateWorkload,
    DeleteWorkload,
    ScaleWorkload,
    CreateInstance,
    UpdateInstanceStatus,
    DeleteInstance,
    RegisterNode,
    UpdateNodeStatus,
    DeregisterNode,
    TransferCredits,
    MintCredits,
    OpenSession,
    CloseSession,
    CreateToken,
    BootstrapToken,
    RevokeToken,
)


@attrs.frozen(kw_only=True, slots=True)
class Envelope:
    """A command as proposed to the log, with its optional exactly-once key.

    ``client_id`` and ``seq`` are both set (a session command, deduplicated) or both None.
    ``seq`` starts at 1 and increases by one per new command of the client; a retry reuses the
    same ``seq``. The pair is what the API layer uses as an idempotency key.

    ``owner`` (s14-owner) is the identity of the caller of a keyed command, set by the serving
    node (``token:<id>``, never a secret): the state machine refuses the command as
    ``session-expired`` when the session was opened by another owner, without touching the
    session (``univrs.sm.sessions``). None: no check (entries written before owners travelled
    in the log, or a node whose members do not all apply payload version 3). Only with a
    client id and seq.
    """

    command: Command
    client_id: str | None = None
    seq: int | None = None
    owner: str | None = None
