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


class Session12Rules(ForgetsFoldedConfigs, LearnerAsksOnlyListed):
    """Neither of session 13's rules: the core of session 12 for the seed-40 class."""
