"""The credit ledger: balances per peer, with real ledger rules.

Invariants (checked by ``problems()`` and by the property tests):

* every stored balance is a positive integer; a peer with zero credits has no entry, so two
  ledgers with the same balances have the same contents whatever their history;
* the sum of all balances equals ``total_supply``, and ``total_supply <= MAX_SUPPLY``; hence
  no single balance can overflow either;
* only ``mint`` changes ``total_supply``; ``transfer`` conserves it.

Each operation validates everything first and then changes both sides together, so a failed
operation changes nothing and a transfer is atomic.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from univrs.sm.responses import ErrorCode, Failure
from univrs.sm.tables import NO_JOURNAL, StateJournal
from univrs.sm.validate import MAX_QUANTITY, id_problem, quantity_problem, text_problem

MAX_SUPPLY = MAX_QUANTITY
MAX_REASON_LEN = 1024


def _invalid(message: str) -> Failure:
    return Failure(code=ErrorCode.INVALID_ARGUMENT, message=message)


@attrs.define(eq=False)
class Ledger:
    """Credit balances per peer id."""

    _balances: dict[str, int] = attrs.field(factory=dict)
    _total_supply: int = 0
    # Told of every balance about to change (a persistent backend writes it with the batch).
    journal: StateJournal = NO_JOURNAL

    @property
    def total_supply(self) -> int:
        """The sum of all balances: everything ever minted."""
        return self._total_supply

    def balance(self, peer: str) -> int:
        """A peer's balance (0 for a peer that has none)."""
        return self._balances.get(peer, 0)

    def items(self) -> Iterator[tuple[str, int]]:
        """(peer, balance) for every peer with a positive balance, in peer order (whatever
        the order they got credits in: a restored ledger lists them the same)."""
        return iter(sorted(self._balances.items()))

    def __len__(self) -> int:
        return len(self._balances)

    def mint(self, to_peer: str, amount: int, reason: str) -> Failure | None:
        """Create ``amount`` credits for ``to_peer``; None on success."""
        problem = (
            id_problem("to_peer", to_peer)
            or quantity_problem("amount", amount, minimum=1)
            or text_problem("reason", reason, MAX_REASON_LEN)
        )
        if problem:
            return _invalid(problem)
        if not reason.strip():
            return _invalid("a mint needs a reason")
        if self._total_supply + amount > MAX_SUPPLY:
            return _invalid(f"minting {amount} would overflow the total supply ({MAX_SUPPLY})")
        self.journal.balance(to_peer)
        self._balances[to_peer] = self._balances.get(to_peer, 0) + amount
        self._total_supply += amount
        return None

    def transfer(self, from_peer: str, to_peer: str, amount: int) -> Failure | None:
        """Move ``amount`` from ``from_peer`` to ``to_peer`` atomically; None on success."""
        problem = (
            id_problem("from_peer", from_peer)
            or id_problem("to_peer", to_peer)
            or quantity_problem("amount", amount, minimum=1)
        )
        if problem:
            return _invalid(problem)
        if from_peer == to_peer:
            return _invalid("cannot transfer credits to the same peer")
        have = self._balances.get(from_peer, 0)
        if have < amount:
            return Failure(
                code=ErrorCode.INSUFFICIENT_CREDITS,
                message=f"{from_peer} has {have} credits, needs {amount}",
            )
        receiver = self._balances.get(to_peer, 0)
        # Cannot happen while sum(balances) == total_supply <= MAX_SUPPLY; kept as a guard.
        if receiver + amount > MAX_SUPPLY:
            return _invalid(f"transfer would overflow the balance of {to_peer}")
        # Validated: now change both sides, nothing below can fail.
        self.journal.balance(from_peer)
        self.journal.balance(to_peer)
        if have == amount:
            del self._balances[from_peer]
        else:
            self._balances[from_peer] = have - amount
        self._balances[to_peer] = receiver + amount
        return None

    def restore(self, balances: list[tuple[str, int]]) -> None:
        """Load balances read from a snapshot (already type-checked); recomputes the supply."""
        self._balances = dict(balances)
        self._total_supply = sum(self._balances.values())

    def problems(self) -> list[str]:
        """Violated invariants (empty when the ledger is sound)."""
        found = [f"balance of {p} is {b}" for p, b in self._balances.items() if b <= 0]
        total = sum(self._balances.values())
        if total != self._total_supply:
            found.append(f"balances sum to {total}, total supply is {self._total_supply}")
        if self._total_supply > MAX_SUPPLY:
            found.append(f"total supply {self._total_supply} exceeds {MAX_SUPPLY}")
        return found
