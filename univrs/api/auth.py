"""Who is calling, and may they: API tokens and roles (docs/security.md, "Tokens and roles").

Theory of operation. A request carries the caller's token secret (REST: ``Authorization:
Bearer <secret>``; the fast protocol: ``token`` in the hello or in a request) and the address
it came from. ``Authority.authorize(caller, role)`` answers with the caller's ``Identity``
or raises:

* auth off (``[auth] enabled = false``, the default): everyone may do everything; the
  identity is the client's address (it bounds sessions and rate limits per address);
* auth on: no token, or one whose SHA-256 is not in this node's applied token table (unknown,
  revoked), is ``Unauthenticated`` (401); a token without the operation's role (or a role it
  implies: ``admin`` implies all, ``write`` implies ``read``) is ``PermissionDenied`` (403).
  ``token.bootstrap`` (role ``PUBLIC``) needs no token; ``session.open`` and ``session.close``
  (role ``ANY_TOKEN``) need a valid token of any role.

The check reads this node's applied state, so a token created or revoked on the leader takes
effect on each node as soon as that node applied the entry (milliseconds behind the leader).
A follower forwarding a write to its leader sends the caller's token along (never its own), so
the leader checks the same token again: forwarding cannot raise a caller's rights.
"""

from __future__ import annotations

import copy
import hashlib
from typing import TYPE_CHECKING

import attrs

from univrs.errors import PermissionDenied, Unauthenticated
from univrs.service.declare import ANY_TOKEN, PUBLIC
from univrs.sm.tokens import ROLES, implied

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

BEARER = "bearer "
MAX_SECRET_LEN = 512  # longer "secrets" are refused before hashing


@attrs.frozen
class Caller:
    """What a request says about who sends it: the token secret it carries (None: none) and
    the client's address (host) as the serving node sees it (or as the forwarding node did)."""

    token: str | None = None
    address: str | None = None


ANONYMOUS = Caller()


@attrs.frozen
class Identity:
    """An authenticated (or, with auth off, an addressed) caller. ``key`` names it for the
    per-caller limits: ``token:<id>`` or ``addr:<host>``."""

    key: str
    roles: frozenset[str]
    name: str = ""


def bearer_token(header: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header (None: no header)."""
    if header is None:
        return None
    if header[: len(BEARER)].lower() != BEARER or not header[len(BEARER) :].strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token secret>'")
    return header[len(BEARER) :].strip()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@attrs.define(eq=False)
class Authority:
    """Authenticates callers against a node's applied token table (see the module docstring)."""

    node: NodeHandle

    @property
    def enabled(self) -> bool:
        return bool(self.node.config.auth_enabled)

    def identify(self, caller: Caller) -> Identity:
        """The caller's identity; raises Unauthenticated (auth on, no valid token)."""
        if not self.enabled:
            return Identity(key=f"addr:{caller.address or 'local'}", roles=frozenset(ROLES))
        if caller.token is None:
            raise Unauthenticated(self._no_token())
        if len(caller.token) > MAX_SECRET_LEN:
            raise Unauthenticated("the token is unknown or revoked")
        token = self.node.runtime.sm.token_by_hash(_hash(caller.token))
        if token is None:
            raise Unauthenticated("the token is unknown or revoked")
        return Identity(key=f"token:{token.id}", roles=implied(token.roles), name=token.name)

    def authorize(self, caller: Caller, role: str, what: str) -> Identity:
        """The caller's identity if it may do ``what``, which needs ``role``."""
        try:
            identified: Identity | Unauthenticated = self.identify(caller)
        except Unauthenticated as exc:
            identified = exc
        return self.permit(caller, identified, role, what)

    def permit(
        self, caller: Caller, identified: Identity | Unauthenticated, role: str, what: str
    ) -> Identity:
        """``authorize`` with ``identify(caller)``'s outcome given (its identity, or the
        ``Unauthenticated`` it raised): a frame of requests by one caller is identified once
        and permitted per operation (univrs/api/service.py ``execute_many``)."""
        if role == PUBLIC:
            if isinstance(identified, Unauthenticated):
                return Identity(key=f"addr:{caller.address or 'local'}", roles=frozenset())
            return identified
        if isinstance(identified, Unauthenticated):
            raise copy.copy(identified)
        identity = identified
        if role == ANY_TOKEN:
            return identity
        if role not in identity.roles:
            granted = ", ".join(sorted(identity.roles)) or "none"
            raise PermissionDenied(
                f"token {identity.name!r} (roles: {granted}) lacks the role {role!r} that "
                f"{what} needs"
            )
        return identity

    def _no_token(self) -> str:
        hint = (
            ""
            if self.node.runtime.sm.tokens_bootstrapped
            else ("; no admin token exists yet: create the first one with `univrs token bootstrap`")
        )
        return (
            "this cluster requires a token: send 'Authorization: Bearer <secret>' "
            f"(UNIVRS_TOKEN for the CLI, token= for the Python client){hint}"
        )
