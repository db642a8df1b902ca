"""Learning that this node was removed from its cluster, and acting on it once.

Two ways to learn it:

1. The normal one: the node applies a configuration that no longer lists it (the leader keeps
   replicating to a member it removes until the removal has committed, so the member normally
   hears of it). The core then stops campaigning by itself: the node is a voter of neither its
   latest nor its committed configuration.
2. A member that missed the end of its removal (it was down, or cut off, when the removal
   committed) still finds itself a voter in its own log. No leader sends to it any more and,
   with PreVote, it never wins an election: it would pre-campaign for ever and learn nothing.
   So a node that believes it may campaign but has heard of no leader for ``ASK_AFTER``
   seconds asks the members of its configuration, through their APIs. A member of the same
   cluster whose commit index lies beyond this node's whole log, and whose configuration does
   not list this node, is evidence; the same evidence ``CONFIRM_AFTER`` seconds later (a removal
   still in flight has committed or been undone by then) settles it.

Either way the node logs it once (WARNING), shows it in its status (``removed``) and sends no
vote requests any more (``MembershipWatch.may_send``): whatever its log says, it does not
campaign. Applying a configuration that lists it again undoes all of this.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from univrs.net.http import get_json
from univrs.raft.messages import Membership, Message, RequestVote
from univrs.raft.ready import Role, Status
from univrs.runtime.addresses import PeerMap
from univrs.runtime.ports import Transport
from univrs.server.wiring import client_ssl

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

log = logging.getLogger("univrs.node")


def cluster_fingerprint(cluster_id: str) -> str:
    """What /v1/node/status shows of the cluster id: enough to tell two clusters apart, not
    the id itself (a raft hello needs the id; it is not shown to whoever reads a status)."""
    return hashlib.sha256(f"univrs-cluster\0{cluster_id}".encode()).hexdigest()[:16]


ASK_AFTER = 10.0  # seconds without a leader before a node that may campaign asks the members
CONFIRM_AFTER = 5.0  # seconds between the first evidence of removal and the confirming one
POLL = 1.0  # seconds between two looks at the node's status
ASK_TIMEOUT = 2.0  # per member asked


@attrs.define(eq=False)
class MembershipWatch:
    """Follows the applied configuration of one node (see the module docstring)."""

    node_id: str
    peers: PeerMap
    # This node was listed by an applied configuration (at start-up: by the snapshot's).
    was_member: bool = False
    removed: str | None = None  # why we believe this node was removed, once we do

    def applied(self, membership: Membership) -> None:
        """Call whenever the applied configuration may have changed (cheap when it did not)."""
        self.peers.applied(membership)
        if self.node_id in membership.members:
            if self.removed is not None:
                log.warning("this node is a member again", extra={"node": self.node_id})
                self.removed = None
            self.was_member = True
        elif self.was_member:
            voters = ",".join(sorted(membership.voters))
            self.learned_removal(f"an applied configuration lists the voters {voters} only")

    def learned_removal(self, reason: str) -> None:
        """This node was removed (``reason`` says how we know): log it once, stop campaigning."""
        if self.removed is not None:
            return
        self.removed = reason
        log.warning(
            "this node was removed from the cluster: it no longer campaigns; stop it (to join "
            "again, start it on an empty data dir)",
            extra={"node": self.node_id, "reason": reason},
        )

    def may_send(self, msg: Message) -> bool:
        """False for the vote requests of a node that knows it was removed."""
        return self.removed is None or not isinstance(msg, RequestVote)


@attrs.frozen
class RemovalGate:
    """The transport as a node's runtime sees it: what ``watch`` forbids is not sent."""

    transport: Transport
    watch: MembershipWatch

    def send(self, msg: Message) -> None:
        """Send ``msg`` unless this node knows it was removed and ``msg`` asks for votes."""
        if self.watch.may_send(msg):
            self.transport.send(msg)

    def send_now(self, msgs: Sequence[Message]) -> None:
        self.transport.send_now([msg for msg in msgs if self.watch.may_send(msg)])


async def watch_for_removal(node: NodeHandle, watch: MembershipWatch) -> None:
    """Ask the members when this node may campaign but hears of no leader (see 2. above)."""
    last_leader = trio.current_time()
    evidence_at: float | None = None
    while True:
        await trio.sleep(POLL)  # a periodic look, not a wait on something that will happen
        s = node.status()
        now = trio.current_time()
        if s.leader is not None or s.role in (Role.LEADER, Role.LEARNER) or watch.removed:
            last_leader, evidence_at = now, None
            continue
        if now - last_leader < ASK_AFTER:
            continue
        evidence = await _ask_members(node, s)
        if evidence is None:
            evidence_at = None
        elif evidence_at is None:
            evidence_at = trio.current_time()
            log.info("a member no longer lists this node", extra={"evidence": evidence})
        elif trio.current_time() - evidence_at >= CONFIRM_AFTER:
            watch.learned_removal(evidence)


async def _ask_members(node: NodeHandle, s: Status) -> str | None:
    """Evidence of our removal from one of our configuration's members, or None."""
    m = s.membership
    for member in sorted(m.members - {node.node_id}):
        api = m.api_address_of(member)
        if api is None:
            continue
        try:
            doc = await get_json(
                api, "/v1/node/status", timeout=ASK_TIMEOUT, ssl_context=client_ssl(node.config)
            )
        except (OSError, ValueError, trio.TooSlowError):
            continue
        if not isinstance(doc, dict) or doc.get("id") != member:
            continue
        if doc.get("cluster") != cluster_fingerprint(node.cluster_id):
            continue
        commit = doc.get("commit_index")
        voters, learners = doc.get("voters"), doc.get("learners")
        if not (isinstance(commit, int) and isinstance(voters, list)):
            continue
        listed = {v for v in voters + (learners if isinstance(learners, list) else [])}
        if commit > s.last_index and node.node_id not in listed:
            shown = ",".join(sorted(str(v) for v in voters))
            return (
                f"{member} committed up to index {commit}, beyond this node's log "
                f"({s.last_index}), and lists the voters {shown} only"
            )
    return None
