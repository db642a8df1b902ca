"""Rows of the operations table (``univrs.service.operations``): credits and access.

Credits, idempotency sessions and API tokens, in the order of the REST API's documentation.
"""

from __future__ import annotations

from univrs.service import schemas as s
from univrs.service.declare import (
    ANY_TOKEN,
    PUBLIC,
    Arg,
    Command,
    Http,
    Kind,
    Operation,
    Opt,
    Param,
    Type,
    in_path,
    list_paged,
    required_id,
)
from univrs.sm.credits import MAX_REASON_LEN
from univrs.sm.tokens import ADMIN, CREDITS, MAX_TOKEN_NAME_LEN, ROLES
from univrs.sm.validate import MAX_QUANTITY

# ---------------------------------------------------------------- schemas only these rows use

_AMOUNT = {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY}
_SECRET = {"type": "string", "pattern": "^[A-Za-z0-9._~-]{32,256}$"}


def _token_params() -> tuple[Param, ...]:
    """The new token's id and secret: chosen by the serving node unless given (not on the
    command line: a secret typed there lands in shell history)."""
    return (
        Param(name="id", type=Type.STR, schema=s.ID, description="default: assigned"),
        Param(
            name="secret",
            type=Type.STR,
            schema=_SECRET,
            description="your own random secret (default: 256 random bits from the node)",
        ),
    )


_TOKEN_NAME = {
    "type": "string",
    "pattern": rf"^[^\u0000]*[^{s.SPACE}\u0000][^\u0000]*$",
    "maxLength": MAX_TOKEN_NAME_LEN,
}


ACCOUNT_OPERATIONS: tuple[Operation, ...] = (
    # ------------------------------------------------------------ credits
    Operation(
        name="credits.mint",
        kind=Kind.WRITE,
        summary="Mint credits for a peer",
        http=Http(method="POST", path="/v1/credits/mint"),
        params=(
            required_id("to_peer", "peer"),
            Param(name="amount", type=Type.INT, schema=_AMOUNT, required=True, cli=Arg("amount")),
            Param(
                name="reason",
                type=Type.STR,
                schema={
                    "type": "string",
                    "pattern": rf"^[^\u0000]*[^{s.SPACE}\u0000][^\u0000]*$",
                    "maxLength": MAX_REASON_LEN,
                },
                required=True,
                cli=Opt(flag="--reason", help="Why (kept for audit).", required=True),
            ),
        ),
        result="Minted",
        client="mint_credits",
        role=CREDITS,
        cli=Command(group="credits", name="mint", help="Create AMOUNT new credits for PEER."),
    ),
    Operation(
        name="credits.transfer",
        kind=Kind.WRITE,
        summary="Transfer credits between peers",
        http=Http(method="POST", path="/v1/credits/transfer"),
        params=(
            required_id("from_peer"),
            required_id("to_peer"),
            Param(name="amount", type=Type.INT, schema=_AMOUNT, required=True, cli=Arg("amount")),
        ),
        result="Transferred",
        client="transfer_credits",
        cli=Command(
            group="credits", name="transfer", help="Move AMOUNT credits from FROM_PEER to TO_PEER."
        ),
    ),
    # `univrs credits balance [PEER]` runs credits.balance with PEER and credits.list without
    # (univrs/cli/state.py): one command for two operations, so neither generates one.
    list_paged(
        name="credits.list",
        summary="List positive balances, paginated by peer",
        path="/v1/credits/balances",
        result="BalanceList",
        client="list_balances",
    ),
    Operation(
        name="credits.balance",
        kind=Kind.READ,
        summary="Get a peer's balance (0 if it has none)",
        http=Http(method="GET", path="/v1/credits/balances/{peer}"),
        params=(in_path("peer", "peer"),),
        result="Balance",
        client="balance",
    ),
    # ------------------------------------------------------------ idempotency sessions
    Operation(
        name="session.open",
        kind=Kind.SESSION,
        summary="Open an idempotency session (for Idempotency-Key)",
        http=Http(method="POST", path="/v1/sessions", creates=True, body=True),
        role=ANY_TOKEN,  # every writer needs one, a credits-only token too
        result="Session",
    ),
    Operation(
        name="session.close",
        kind=Kind.SESSION,
        summary="Close an idempotency session",
        http=Http(method="DELETE", path="/v1/sessions/{client_id}"),
        params=(in_path("client_id", "client_id"),),
        role=ANY_TOKEN,
        result="SessionClosed",
    ),
    # ------------------------------------------------------------ API tokens (admin)
    Operation(
        name="token.bootstrap",
        kind=Kind.SESSION,  # takes no idempotency key: it must work before anyone has a token
        summary=(
            "Create the first admin token; works once in the cluster's life and needs no token "
            "(the answer holds the secret, shown only this once)"
        ),
        http=Http(method="POST", path="/v1/tokens/bootstrap", creates=False, body=True),
        params=(
            Param(
                name="name",
                type=Type.STR,
                schema=_TOKEN_NAME,
                cli=Opt(flag="--name", help="The token's name (default: bootstrap)."),
            ),
            *_token_params(),
        ),
        result="TokenCreated",
        client="bootstrap_token",
        cli=Command(
            group="token",
            name="bootstrap",
            help="Create the first admin token (once) and print its secret.",
        ),
        role=PUBLIC,
    ),
    Operation(
        name="token.create",
        kind=Kind.WRITE,
        summary=(
            "Create an API token with roles (the answer holds the secret, shown only this once)"
        ),
        http=Http(method="POST", path="/v1/tokens", creates=True),
        params=(
            Param(name="name", type=Type.STR, schema=_TOKEN_NAME, required=True, cli=Arg("name")),
            Param(
                name="roles",
                type=Type.STR_LIST,
                schema={
                    "type": "array",
                    "minItems": 1,
                    "maxItems": len(ROLES),
                    "uniqueItems": True,
                    "items": {"type": "string", "enum": list(ROLES)},
                },
                required=True,
                cli=Opt(
                    flag="--role",
                    help=f"A role: {', '.join(ROLES)} (repeatable; admin implies all).",
                    required=True,
                ),
            ),
            *_token_params(),
        ),
        result="TokenCreated",
        client="create_token",
        cli=Command(
            group="token",
            name="create",
            help="Create a token called NAME with --role ... and print its secret (once).",
        ),
        role=ADMIN,
    ),
    list_paged(
        name="token.list",
        summary="List API tokens (never their secrets), paginated by id",
        path="/v1/tokens",
        result="TokenList",
        client="list_tokens",
        cli=Command(group="token", name="list", help="List API tokens (sorted by id)."),
        role=ADMIN,
    ),
    Operation(
        name="token.revoke",
        kind=Kind.WRITE,
        summary="Revoke an API token: every node refuses it once the revoke applied there",
        http=Http(method="DELETE", path="/v1/tokens/{id}"),
        params=(in_path("id"),),
        result="TokenRevoked",
        client="revoke_token",
        cli=Command(group="token", name="revoke", help="Revoke the token with this id."),
        role=ADMIN,
    ),
)
"""The credits, session and token operations."""
