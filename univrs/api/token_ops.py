"""API tokens' operations: building token writes (a secret made or checked, only its hash in
the command), rendering them, and the token list (split out of ``univrs.api.ops``, whose
``HANDLERS`` table names these)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from univrs.api import convert as cv
from univrs.api import opargs as oa
from univrs.errors import (
    Conflict,
    InvalidArgument,
)
from univrs.sm.commands import (
    BootstrapToken,
    Command,
    CreateToken,
    RevokeToken,
)
from univrs.sm.responses import Created, Response
from univrs.sm.state import ClusterStateMachine
from univrs.sm.tokens import MAX_TOKEN_NAME_LEN, ROLES, Token
from univrs.sm.validate import text_problem

SECRET_PREFIX = "univrs."
_SECRET_RE = re.compile(r"[A-Za-z0-9._~-]{32,256}")


def new_secret() -> str:
    """A token secret: 256 random bits, URL-safe, recognisable by its prefix."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What the state machine stores of a secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _secret(args: dict[str, Any]) -> str:
    if "secret" not in args:
        return new_secret()
    given = cv.read_str(args["secret"], "secret")
    if _SECRET_RE.fullmatch(given) is None:
        raise InvalidArgument(
            "secret must be 32-256 characters of letters, digits and ._~- (a random one)",
            field="secret",
        )
    return given


def _token_name(args: dict[str, Any], default: str | None = None) -> str:
    name = cv.read_str(args["name"], "name") if "name" in args or default is None else default
    problem = text_problem("name", name, MAX_TOKEN_NAME_LEN)
    if problem is None and not name.strip():
        problem = "name must not be blank"
    if problem:
        raise InvalidArgument(problem, field="name")
    return name


def _roles(args: dict[str, Any]) -> tuple[str, ...]:
    raw = args["roles"]
    if type(raw) is not list or not raw:
        raise InvalidArgument("roles must be a non-empty list", field="roles")
    for role in raw:
        if role not in ROLES:
            raise InvalidArgument(f"role {role!r} is not one of {', '.join(ROLES)}", field="roles")
    return tuple(sorted(set(raw)))


def _build_create_token(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    ident, name, roles, secret = oa.id_or_new(args), _token_name(args), _roles(args), _secret(args)
    command = CreateToken(id=ident, name=name, roles=roles, secret_hash=secret_hash(secret))
    return command, {"id": ident, "name": name, "roles": list(roles), "secret": secret}


def _build_bootstrap_token(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    ident, name, secret = oa.id_or_new(args), _token_name(args, "bootstrap"), _secret(args)
    command = BootstrapToken(id=ident, name=name, secret_hash=secret_hash(secret))
    return command, {"id": ident, "name": name, "secret": secret}


def token_doc(token: Token) -> dict[str, Any]:
    """A token as the API shows it: never its secret (nobody has it) nor its hash."""
    return {
        "id": token.id,
        "name": token.name,
        "roles": list(token.roles),
        "created_index": token.created_index,
        "created_ms": token.created_ms,
    }


def _render_token(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    # A retried key is answered with the first creation's response: its id, not the retry's
    # (a client's retry draws a new id on the serving node; s13-audit2).
    ident = response.id if isinstance(response, Created) else cmd.id
    token = state.token(ident)
    if token is None:
        return oa.gone(ident, response)
    return {**token_doc(token), "version": getattr(response, "version", None)}


def _finish_token(built: dict[str, Any], result: Any, state: ClusterStateMachine) -> Any:
    """Show the secret, once: only if the stored token is the one this request created (a
    retried idempotency key is answered with the first creation, whose secret is gone)."""
    token = state.token(built["id"])
    if token is None or not hmac.compare_digest(token.secret_hash, secret_hash(built["secret"])):
        raise Conflict(
            f"token {result.get('id', built['id'])!r} was created by an earlier attempt of this "
            "request; its secret was shown then and is stored nowhere: revoke it and create "
            "another"
        )
    return {**result, "secret": built["secret"]}


def _build_revoke_token(args: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    ident = oa.existing_id(args, "token")
    return RevokeToken(id=ident), args


def _render_revoked(cmd: Any, response: Response, state: ClusterStateMachine) -> Any:
    return {"id": cmd.id, "revoked": True, "version": getattr(response, "version", None)}


def _read_tokens(args: dict[str, Any], state: ClusterStateMachine) -> Any:
    page = oa.page(state.tokens(), lambda t: t.id, args, state)
    page["items"] = [token_doc(t) for t in page["items"]]
    return page
