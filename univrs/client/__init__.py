"""The Python client of univrs: async (Trio) ``Client`` via ``open_client``, blocking
``SyncClient``, and the typed errors both raise (``univrs.client.errors``)."""

from univrs.client.client import Client, discover, open_client
from univrs.client.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    ConnectionLost,
    InsufficientCredits,
    InvalidArgument,
    MalformedRequest,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    SessionExpired,
    StaleSequence,
    Timeout,
    Unavailable,
    VersionConflict,
)
from univrs.client.sync import SyncClient

__all__ = [
    "AlreadyExists",
    "ApiError",
    "Client",
    "Conflict",
    "ConnectionLost",
    "InsufficientCredits",
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
    "VersionConflict",
    "discover",
    "open_client",
]
