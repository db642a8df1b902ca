"""The Python client of univrs: async (Trio) ``Client`` via ``open_client``, blocking
``SyncClient``, and the errors both raise: the product's one error family (``univrs.errors``),
the same classes the server raises, re-exported here."""

from univrs.client.client import Client, discover, open_client
from univrs.client.sync import SyncClient
from univrs.errors import (
    AlreadyExists,
    Conflict,
    ConnectionLost,
    InsufficientCredits,
    InternalError,
    InvalidArgument,
    MalformedRequest,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    SessionExpired,
    StaleSequence,
    Timeout,
    Unavailable,
    UnivrsError,
    VersionConflict,
)

__all__ = [
    "AlreadyExists",
    "Client",
    "Conflict",
    "ConnectionLost",
    "InsufficientCredits",
    "InternalError",
    "InvalidArgument",
    "MalformedRequest",
    "NotFound",
    "NotLeader",
    "OutcomeUnknown",
    "SessionExpired",
    "StaleSequence",
    "SyncClient",
    "Timeout",
    "Unavailable",
    "UnivrsError",
    "VersionConflict",
    "discover",
    "open_client",
]
