"""Majority arithmetic over a set of voters (paper 5.2, 5.3; dissertation 4).

Only voters count: learners never appear in these computations. The functions are pure and take
callables for per-voter values so callers need not build intermediate dicts.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping

from univrs.raft.messages import NodeId


def majority(n: int) -> int:
    """The smallest number of voters that is a majority of ``n`` voters (``n >= 1``)."""
    return n // 2 + 1


def quorum_index(voters: Collection[NodeId], index_of: Callable[[NodeId], int]) -> int:
    """The largest value that at least a majority of ``voters`` have reached.

    Used for the commit index (values are match indexes) and for ReadIndex rounds (values are
    the latest acknowledged round). With no voters nothing can be agreed on: 0.
    """
    return quorum_value([index_of(v) for v in voters])


def quorum_value(values: list[int]) -> int:
    """``quorum_index`` over the voters' values already listed (one per voter; 0 if none)."""
    if not values:
        return 0
    values.sort(reverse=True)
    return values[majority(len(values)) - 1]


def has_quorum(voters: Collection[NodeId], ok: Callable[[NodeId], bool]) -> bool:
    """True iff a majority of ``voters`` satisfy ``ok`` (False with no voters)."""
    if not voters:
        return False
    return sum(1 for v in voters if ok(v)) >= majority(len(voters))


class VoteResult(enum.Enum):
    """Outcome of an election as far as the votes received so far decide it."""

    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer grant, else PENDING.

    Votes from nodes that are not voters are ignored (learners never vote).
    """
    if not voters:
        return VoteResult.LOST
    need = majority(len(voters))
    granted = rejected = 0
    for v in voters:
        answer = votes.get(v)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING
