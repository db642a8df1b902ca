"""``univrs credits ...``: mint, transfer and inspect credits."""

from __future__ import annotations

from typing import Any

import click

from univrs.cli import format_table, main
from univrs.cli_state.common import (
    all_pages,
    client_for,
    common_options,
    consistency,
    emit,
    local_option,
)


@main.group()
def credits() -> None:
    """Mint, transfer and inspect credits."""


@credits.command("mint")
@click.argument("peer")
@click.argument("amount", type=int)
@click.option("--reason", required=True, help="Why (kept for audit).")
@common_options
def credits_mint(
    api: str, timeout: float, as_json: bool, peer: str, amount: int, reason: str
) -> None:
    """Create AMOUNT new credits for PEER."""
    with client_for(api, timeout) as client:
        doc = client.mint_credits(peer, amount, reason)
        emit(as_json, doc, lambda d: f"minted {amount} for {d['peer']}: balance {d['balance']}")


@credits.command("transfer")
@click.argument("from_peer")
@click.argument("to_peer")
@click.argument("amount", type=int)
@common_options
def credits_transfer(
    api: str, timeout: float, as_json: bool, from_peer: str, to_peer: str, amount: int
) -> None:
    """Move AMOUNT credits from FROM_PEER to TO_PEER."""
    with client_for(api, timeout) as client:
        doc = client.transfer_credits(from_peer, to_peer, amount)

        def human(d: dict[str, Any]) -> str:
            src, dst = d["from"], d["to"]
            return (
                f"moved {d['amount']} from {src['peer']} (now {src['balance']}) "
                f"to {dst['peer']} (now {dst['balance']})"
            )

        emit(as_json, doc, human)


@credits.command("balance")
@click.argument("peer", required=False)
@local_option
@common_options
def credits_balance(api: str, timeout: float, as_json: bool, peer: str | None, local: bool) -> None:
    """Show PEER's balance, or every positive balance without PEER."""
    with client_for(api, timeout) as client:
        if peer is not None:
            doc = client.balance(peer, consistency=consistency(local))
            emit(as_json, doc, lambda d: f"{d['peer']}: {d['balance']}")
            return
        page = all_pages(client.list_balances, None, consistency=consistency(local))

        def human(p: dict[str, Any]) -> str:
            rows = [[b["peer"], b["balance"]] for b in p["items"]]
            return format_table(["PEER", "BALANCE"], rows) + f"\ntotal: {p['total_supply']}"

        emit(as_json, page, human)
