"""The peer map a node gives its raft transport, and what it learns from applied configurations.

The map is the union of

* every member of the node's newest (appended) configuration and of its applied one (the
  driver's ``on_membership``: a removed member stays reachable until its removal is applied);
* the members' addresses a joining node was given when it asked to join. They hold until the
  node has *applied* a configuration that lists the node itself: that one is at least as new
  as the cluster the node asked to join, so a join-time member it lacks has really been
  removed. Until then the node's log may hold nothing, or only old configurations (a brand-new
  member catching up from index 1 adopts the bootstrap voters first), and those addresses are
  the ones that let it answer the cluster.

Besides, the transport never forgets the peer that sends us entries (univrs/net/transport.py).

``MembershipWatch`` follows the applied configuration: it drops the join-time addresses once
they are superseded, and notices when this node is removed (it logs that once; the core stops
campaigning once the removal is committed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import attrs

from univrs.raft.messages import Membership

log = logging.getLogger("univrs.node")


@attrs.define(eq=False)
class PeerMap:
    """Builds the transport's peer map (see the module docstring).

    ``publish`` receives the complete map of advertised addresses (this node's own entry
    included; the transport ignores it)."""

    node_id: str
    publish: Callable[[dict[str, str]], None]
    _config: dict[str, str] = attrs.field(factory=dict, init=False)
    _join: dict[str, str] = attrs.field(factory=dict, init=False)
    _published: dict[str, str] | None = attrs.field(default=None, init=False)

    @property
    def join_addresses(self) -> dict[str, str]:
        """The join-time addresses still held (empty once superseded)."""
        return dict(self._join)

    def on_membership(self, peers: Mapping[str, str]) -> None:
        """The driver's callback: the members of the newest and the applied configuration."""
        self._config = dict(peers)
        self._publish()

    def hold_join_addresses(self, addresses: Mapping[str, str]) -> None:
        """Keep ``addresses`` (the cluster's members when we asked to join) in the map until a
        configuration listing this node is applied."""
        self._join.update({n: a for n, a in addresses.items() if n != self.node_id})
        self._publish()

    def applied(self, membership: Membership) -> None:
        """The applied configuration is now ``membership``."""
        if self._join and self.node_id in membership.members:
            dropped = sorted(set(self._join) - set(membership.members))
            self._join = {}
            log.info(
                "applied a configuration that lists this node: join-time addresses released",
                extra={"removed_since": ",".join(dropped) or "-"},
            )
            self._publish()

    def _publish(self) -> None:
        peers = {**self._join, **self._config}
        if peers != self._published:
            self._published = peers
            self.publish(peers)


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
        elif self.was_member and self.removed is None:
            self.removed = "an applied configuration no longer lists this node"
            log.warning(
                "this node was removed from the cluster: it no longer votes or campaigns; "
                "stop it (to join again, start it on an empty data dir)",
                extra={
                    "node": self.node_id,
                    "voters": ",".join(sorted(membership.voters)),
                },
            )
