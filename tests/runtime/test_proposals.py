"""Proposal outcomes and retry rules (univrs/runtime/proposals.py), shared by the API, the
driver and the simulator."""

from __future__ import annotations

from univrs.runtime.proposals import Outcome, PendingProposals, WriteAttempts


def test_an_applied_entry_settles_its_proposal_by_term() -> None:
    p: PendingProposals[str] = PendingProposals()
    p.appended(3, 10, ["a", "b", "c"])
    assert p.applied(10, 3) == ("a", Outcome.APPLIED)
    assert p.applied(11, 4) == ("b", Outcome.NOT_APPLIED)  # replaced by another leader's entry
    assert p.applied(11, 3) is None  # settled already
    assert list(p) == ["c"]


def test_a_snapshot_over_a_pending_proposal_leaves_its_outcome_unknown() -> None:
    p: PendingProposals[str] = PendingProposals()
    p.appended(2, 5, ["a", "b"])
    p.appended(3, 9, ["c"])
    assert p.covered(8) == ["a", "b"]
    assert p.covered_outcome() is Outcome.UNKNOWN  # never "not applied": bug 5
    assert len(p) == 1


def test_only_a_keyed_write_is_retried_after_an_unknown_outcome() -> None:
    keyless = WriteAttempts(keyed=False)
    assert keyless.failed(Outcome.NOT_APPLIED)
    assert not keyless.refusal_is_unknown()
    assert not keyless.failed(Outcome.UNKNOWN)
    assert keyless.refusal_is_unknown()  # a later refusal must not say "nothing applied"
    keyed = WriteAttempts(keyed=True)
    assert keyed.failed(Outcome.UNKNOWN)  # the session answers the duplicate
    assert keyed.failed(Outcome.NOT_APPLIED)
    assert keyed.refusal_is_unknown()
