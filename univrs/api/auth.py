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

The check reads this node's applied state, so a token revoked on the leader takes effect on
each node as soon as that node applied the entry (milliseconds behind the leader). A token
created on the leader works on every node at once: ``authorize_fresh``, the check every
endpoint makes, does not refuse a well-formed token this node does not know before it caught
up with the leader (a ReadIndex barrier: the leader's commit index, then applied up to it
here, within ``CATCH_UP_SECONDS``) and looked again; a lagging follower used to answer 401
until it applied the creation.

A hostile sender of made-up (or revoked) tokens must not make every request or frame cost a
round with the leader, so catch-ups are bounded (``catch_up_for``):

* one in flight per client address: a request whose address has one in flight waits for it to
  end (within ``CATCH_UP_SECONDS`` in all) and looks again before it may start its own, so a
  burst of requests with one fresh token costs one catch-up;
* a token bucket per client address (``ADDRESS_RATE``, ``ADDRESS_BURST``) and one for the node
  (``NODE_RATE``, ``NODE_BURST``, whatever the addresses): a caller whose catch-up the buckets
  refuse gets its 401 at once, saying so and when to retry (``unauthenticated``), and the
  first refusal of each kind is logged at WARNING (then only counted, ``catch_ups_refused``).

The catch-ups admitted share ReadIndex rounds through the store's read coalescer.
A follower forwarding a write to its leader sends the caller's token along (never its own), so
the leader checks the same token again: forwarding cannot raise a caller's rights.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

import attrs
import trio

from univrs.api.limits import RateLimiter
from univrs.errors import PermissionDenied, RateLimited, Unauthenticated, UnivrsError
from univrs.service.declare import ANY_TOKEN, PUBLIC
from univrs.sm.tokens import ROLES, implied

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

log = logging.getLogger("univrs.api")

BEARER = "bearer "
MAX_SECRET_LEN = 512  # longer "secrets" are refused before hashing
CATCH_UP_SECONDS = 2.0
"""How long a node that does not know a token waits to catch up with its leader (a ReadIndex
barrier) before it answers 401."""
ADDRESS_RATE = 2.0
"""Catch-ups per second one client address may cause, with bursts of ``ADDRESS_BURST``."""
ADDRESS_BURST = 5
NODE_RATE = 20.0
"""Catch-ups per second all clients of a node together may cause, bursts of ``NODE_BURST``."""
NODE_BURST = 40
UNKNOWN = "the token is unknown or revoked"
MAX_OPEN_IDENTITIES = 1024
"""Identities kept for callers' addresses with auth off (``Authority.identify``); past it the
kept ones are dropped (a forwarded request may name any address)."""


@attrs.frozen
class Caller:
    """What a request says about who sends it: the token secret it carries (None: none) and
    the client's address (host) as the serving node sees it (or as the forwarding node did)."""

    token: str | None = None
    address: str | None = None
    # The address the request really came from when it names another (``address``: a
    # forwarded request's client, as the forwarding node saw it). Anyone may claim to
    # forward, so the catch-up bounds are this one's (s26-fuzz: a client naming a new
    # ``client`` per request spent the node's whole bucket).
    via: str | None = None


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
    # The barrier that brings this node up to its leader's commit index (a ReadIndex, applied
    # here); None: the runtime's own ``read_index``. The store passes its read coalescer.
    catch_up: Callable[[], Awaitable[object]] | None = None
    catch_ups: int = 0  # statistics: unknown tokens looked up again after a catch-up
    catch_ups_refused: int = 0  # statistics: callers refused a catch-up by the buckets
    by_address: RateLimiter = attrs.field(
        factory=lambda: RateLimiter(rate=ADDRESS_RATE, burst=ADDRESS_BURST)
    )
    by_node: RateLimiter = attrs.field(
        factory=lambda: RateLimiter(rate=NODE_RATE, burst=NODE_BURST)
    )
    _in_flight: dict[str, trio.Event] = attrs.field(factory=dict)  # address -> its catch-up
    _logged: set[str] = attrs.field(factory=set)  # kinds of refusal logged at WARNING
    # With auth off, the identity of each caller's address: a function of the address alone,
    # built once, not per request or frame (an attrs instance and a frozenset, session 29).
    _open: dict[str | None, Identity] = attrs.field(factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.node.config.auth_enabled)

    def identify(self, caller: Caller) -> Identity:
        """The caller's identity; raises Unauthenticated (auth on, no valid token)."""
        if not self.enabled:
            address = caller.address
            identity = self._open.get(address)
            if identity is None:
                if len(self._open) >= MAX_OPEN_IDENTITIES:
                    self._open.clear()
                identity = Identity(key=f"addr:{address or 'local'}", roles=_ALL_ROLES)
                self._open[address] = identity
            return identity
        if caller.token is None:
            raise Unauthenticated(self._no_token())
        if len(caller.token) > MAX_SECRET_LEN:
            raise Unauthenticated(UNKNOWN)
        token = self.node.runtime.sm.token_by_hash(_hash(caller.token))
        if token is None:
            raise Unauthenticated(UNKNOWN)
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

    async def authorize_fresh(self, caller: Caller, role: str, what: str) -> Identity:
        """``authorize``, but a well-formed token this node does not know is looked up again
        once this node caught up with its leader (at most ``CATCH_UP_SECONDS``): a token the
        leader created a moment ago may not be applied here yet."""
        try:
            return self.authorize(caller, role, what)
        except Unauthenticated:
            if not self._maybe_unknown_yet(caller):
                raise
        refused = await self.catch_up_for([caller])
        if caller in refused:
            raise refused[caller]
        return self.authorize(caller, role, what)

    def may_learn(self, caller: Caller) -> bool:
        """Could ``catch_up_once`` make this caller's token known (auth on, a well-formed
        token this node does not know)?"""
        return self._maybe_unknown_yet(caller)

    async def catch_up_for(self, callers: Collection[Caller]) -> dict[Caller, Unauthenticated]:
        """Catch up with the leader once for ``callers`` (whose well-formed tokens this node
        may not know yet) before they are looked up again, within the bounds of the module
        docstring and ``CATCH_UP_SECONDS`` in all; a frame of requests does this once for all
        its callers (univrs/api/service.py ``execute_many``). Answers the callers the buckets
        refused a catch-up, each with the 401 to answer it with."""
        refused: dict[Caller, Unauthenticated] = {}
        with trio.move_on_after(CATCH_UP_SECONDS):
            while True:  # one catch-up in flight per address: wait for theirs, look again
                learners = [caller for caller in callers if self._maybe_unknown_yet(caller)]
                busy = {_address(c) for c in learners} & self._in_flight.keys()
                if not busy:
                    break
                await self._in_flight[next(iter(busy))].wait()
            admitted: set[str] = set()
            for address in {_address(caller) for caller in learners}:
                try:
                    self.by_address.take(address, "unknown tokens")
                    admitted.add(address)
                except RateLimited as exc:
                    self._refuse(learners, {address}, exc, refused, "address")
            if admitted:
                try:
                    self.by_node.take("all clients", "unknown tokens")
                except RateLimited as exc:
                    self._refuse(learners, admitted, exc, refused, "node")
                    admitted = set()
            if admitted:
                done = trio.Event()
                for address in admitted:
                    self._in_flight[address] = done
                try:
                    await self.catch_up_once()
                finally:
                    for address in admitted:
                        if self._in_flight.get(address) is done:
                            del self._in_flight[address]
                    done.set()
        return refused

    def _refuse(
        self,
        learners: list[Caller],
        addresses: set[str],
        exc: RateLimited,
        refused: dict[Caller, Unauthenticated],
        kind: str,
    ) -> None:
        """Answer the ``learners`` from ``addresses`` with a 401 saying why this node did not
        catch up for them; log the first refusal of each ``kind`` at WARNING."""
        for caller in learners:
            if _address(caller) in addresses:
                refused[caller] = Unauthenticated(
                    f"{UNKNOWN} (this node did not check with its leader again: {exc.message})"
                )
                self.catch_ups_refused += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(
                "answering unknown tokens with 401 without catching up with the leader: %s "
                "(the first refusal per %s; later ones are counted, not logged)",
                exc.message,
                kind,
            )

    async def catch_up_once(self) -> None:
        """Catch up with the leader (at most ``CATCH_UP_SECONDS``), unbounded: callers go
        through ``catch_up_for``."""
        barrier = self.catch_up if self.catch_up is not None else self.node.runtime.read_index
        self.catch_ups += 1
        # No leader confirming it in time (or at all): judge by what this node holds.
        with trio.move_on_after(CATCH_UP_SECONDS), contextlib.suppress(UnivrsError):
            await barrier()

    def _maybe_unknown_yet(self, caller: Caller) -> bool:
        """A token that a node catching up could learn: auth on, well-formed, unknown here."""
        token = caller.token
        return (
            self.enabled
            and token is not None
            and len(token) <= MAX_SECRET_LEN
            and self.node.runtime.sm.token_by_hash(_hash(token)) is None
        )

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


_ALL_ROLES = frozenset(ROLES)  # an identity's roles with auth off


def _address(caller: Caller) -> str:
    """The key of a caller's catch-up bounds: the address its request came from (the
    forwarding node's for a forwarded request, never the one it claims: ``Caller.via``;
    None: an in-process caller)."""
    return caller.via or caller.address or "local"
