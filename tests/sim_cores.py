"""Cores with session 13's rules for the seed-40 class taken back out (docs/liveness-gaps.md,
s13-live): the diagnostic cores the simulator's tests pin closed seeds against
(tests/test_sim_history.py, tests/test_sim_verify.py, tests/test_sim_senders.py)."""

from __future__ import annotations

from univrs.raft import RaftNode
from univrs.raft.messages import Message, NodeId


class ForgetsFoldedConfigs(RaftNode):
    """Names by the log it holds only: the configurations compaction or a snapshot's install
    folded away are forgotten (``HardState.named`` is still written, and ignored), as session
    12's ``_once_listed`` did."""

    def _once_listed(self, node: NodeId) -> bool:
        return self._configs.ever_lists(node, folded=False)


class LearnerAsksOnlyListed(RaftNode):
    """A learner's probe asks only the members it lists, and an unlisted id's rejection naming
    itself is no vouch (session 12's learner)."""

    def _probe_peers(self) -> set[NodeId]:
        return set(self._configs.current.members)

    def _self_vouch_heard(self, msg: Message) -> bool:
        return False


class HoldsUnlistedLeaderToAnOldIncarnation(RaftNode):
    """Holds an unlisted leader to the incarnation it last followed that id at, in whatever
    term that was (the rule before s13-live's fix of 3-node seed 130355)."""

    def _unlisted_incarnation(self, leader: NodeId | None, term: int | None) -> str | None:
        return old_unlisted_incarnation(self, leader)


def old_unlisted_incarnation(node: RaftNode, leader: NodeId | None) -> str | None:
    """The incarnation the old rule holds the unlisted ``leader`` to: the one ``node`` last
    followed that id at, in any term."""
    followed, inc = node._leader_incarnation
    return inc if leader is not None and followed == leader else None


class Session12Rules(
    ForgetsFoldedConfigs, LearnerAsksOnlyListed, HoldsUnlistedLeaderToAnOldIncarnation
):
    """None of session 13's rules: the core of session 12 for the seed-40 class."""
