"""API tokens with roles, as replicated state (etcd RBAC / Consul ACL style).

Theory of operation
-------------------
A token is a high-entropy random secret chosen by the node that serves ``token.create`` (never
inside ``apply``: the state machine must stay deterministic). Only its SHA-256 travels in the
command and is stored: the log, snapshots and this table never hold a secret, so a stolen data
dir or snapshot gives no usable token. A plain hash (not a slow KDF) is enough because the
secret has 256 bits of entropy: there is nothing to guess.

A token has an id (chosen by the proposer), a name, a set of roles, and when it was created
(log index and leader-stamped time). ``revoke`` deletes it; a revoked token is unknown on every
replica once the revoke is applied there.

Roles (``ROLES``): ``read`` reads the state, ``write`` changes workloads, instances, nodes and
sessions and transfers credits (and reads), ``credits`` mints credits, ``admin`` manages
membership, snapshots and tokens and implies every other role. ``implied(roles)`` is the
closure the API checks against.

Bootstrap (Consul's ``acl bootstrap``): the first admin token is created by ``bootstrap``,
which succeeds only while no admin token was ever created (by ``bootstrap``, or by ``create``
while auth was still off): afterwards, even if every token is revoked, it is refused, so a
stranger cannot bootstrap again and take the cluster over.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import attrs

from univrs.sm.responses import ErrorCode, Failure
from univrs.sm.tables import NO_JOURNAL, StateJournal
from univrs.sm.validate import id_problem, text_problem

READ = "read"
WRITE = "write"
CREDITS = "credits"
ADMIN = "admin"
ROLES: tuple[str, ...] = (READ, WRITE, CREDITS, ADMIN)
MAX_TOKENS = 10_000
MAX_TOKEN_NAME_LEN = 128
_HASH_RE = re.compile(r"[0-9a-f]{64}")

# What each role grants besides itself.
_IMPLIES: dict[str, tuple[str, ...]] = {
    READ: (),
    WRITE: (READ,),
    CREDITS: (),
    ADMIN: (READ, WRITE, CREDITS),
}


def implied(roles: Iterable[str]) -> frozenset[str]:
    """Every role the given roles grant (``admin`` grants all, ``write`` grants ``read``)."""
    out: set[str] = set()
    for role in roles:
        out.add(role)
        out.update(_IMPLIES.get(role, ()))
    return frozenset(out)


def roles_problem(roles: object) -> str | None:
    """Problem with a token's roles: a non-empty tuple of distinct known roles, sorted."""
    if type(roles) is not tuple or not roles:
        return "roles must be a non-empty list"
    for role in roles:
        if role not in ROLES:
            return f"role {role!r} is not one of {', '.join(ROLES)}"
    if list(roles) != sorted(set(roles)):
        return "roles must be distinct and sorted"
    return None


def hash_problem(value: object) -> str | None:
    """Problem with a secret's hash: 64 lower-case hex digits (SHA-256)."""
    if type(value) is not str or _HASH_RE.fullmatch(value) is None:
        return "the secret hash must be 64 lower-case hex digits (SHA-256)"
    return None


@attrs.frozen(kw_only=True, slots=True)
class Token:
    """One token as stored: never its secret."""

    id: str
    name: str
    roles: tuple[str, ...]
    secret_hash: str
    created_index: int
    created_ms: int


def _failure(code: ErrorCode, message: str) -> Failure:
    return Failure(code=code, message=message)


@attrs.define(eq=False)
class TokenTable:
    """Tokens by id, with the index by secret hash that authentication uses."""

    _tokens: dict[str, Token] = attrs.field(factory=dict)
    _by_hash: dict[str, str] = attrs.field(factory=dict)
    bootstrapped: bool = False
    # Told of every token about to change (a persistent backend writes it with the batch).
    journal: StateJournal = NO_JOURNAL

    def __len__(self) -> int:
        return len(self._tokens)

    def __iter__(self) -> Iterator[Token]:
        """The tokens in id order (whatever the order they were created in)."""
        return iter(sorted(self._tokens.values(), key=lambda t: t.id))

    def get(self, token_id: str) -> Token | None:
        """The token with this id, or None."""
        return self._tokens.get(token_id)

    def by_hash(self, secret_hash: str) -> Token | None:
        """The token whose secret hashes to ``secret_hash``, or None."""
        token_id = self._by_hash.get(secret_hash)
        return None if token_id is None else self._tokens[token_id]

    def create(
        self,
        *,
        token_id: str,
        name: str,
        roles: tuple[str, ...],
        secret_hash: str,
        index: int,
        now_ms: int,
    ) -> Failure | None:
        """Add a token (validated first: nothing changes on a failure)."""
        problem = (
            id_problem("token id", token_id)
            or text_problem("name", name, MAX_TOKEN_NAME_LEN)
            or roles_problem(roles)
            or hash_problem(secret_hash)
        )
        if problem is None and not name.strip():
            problem = "name must not be blank"
        if problem:
            return _failure(ErrorCode.INVALID_ARGUMENT, problem)
        if token_id in self._tokens:
            return _failure(ErrorCode.ALREADY_EXISTS, f"token {token_id!r} already exists")
        if secret_hash in self._by_hash:
            return _failure(ErrorCode.ALREADY_EXISTS, "a token with this secret already exists")
        if len(self._tokens) >= MAX_TOKENS:
            return _failure(ErrorCode.INVALID_ARGUMENT, f"at most {MAX_TOKENS} tokens")
        self.journal.token(token_id)
        self._tokens[token_id] = Token(
            id=token_id,
            name=name,
            roles=roles,
            secret_hash=secret_hash,
            created_index=index,
            created_ms=now_ms,
        )
        self._by_hash[secret_hash] = token_id
        if ADMIN in roles:
            self.bootstrapped = True  # an admin exists: no stranger may bootstrap any more
        return None

    def bootstrap(
        self, *, token_id: str, name: str, secret_hash: str, index: int, now_ms: int
    ) -> Failure | None:
        """Create the first admin token; refused once the cluster was bootstrapped."""
        if self.bootstrapped:
            return _failure(
                ErrorCode.ALREADY_EXISTS,
                "the cluster's tokens were bootstrapped already; ask an admin for a token",
            )
        return self.create(
            token_id=token_id,
            name=name,
            roles=(ADMIN,),
            secret_hash=secret_hash,
            index=index,
            now_ms=now_ms,
        )

    def revoke(self, token_id: str) -> Failure | None:
        """Delete a token; not-found if there is none with this id."""
        if token_id not in self._tokens:
            return _failure(ErrorCode.NOT_FOUND, f"token {token_id!r} not found")
        self.journal.token(token_id)
        token = self._tokens.pop(token_id)
        del self._by_hash[token.secret_hash]
        return None

    def restore(self, tokens: list[Token], bootstrapped: bool) -> None:
        """Load tokens read from a snapshot, in their stored order."""
        self._tokens = {t.id: t for t in tokens}
        self._by_hash = {t.secret_hash: t.id for t in tokens}
        self.bootstrapped = bootstrapped

    def problems(self) -> list[str]:
        """Violated invariants (empty when the table is sound)."""
        found: list[str] = []
        if len(self._by_hash) != len(self._tokens):
            found.append("two tokens share a secret hash")
        if any(ADMIN in t.roles for t in self._tokens.values()) and not self.bootstrapped:
            found.append("an admin token exists but the table is not marked bootstrapped")
        for t in self._tokens.values():
            problem = (
                id_problem("token id", t.id)
                or roles_problem(t.roles)
                or hash_problem(t.secret_hash)
            )
            if problem:
                found.append(f"token {t.id!r}: {problem}")
        return found
