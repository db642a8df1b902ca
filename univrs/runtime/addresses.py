"""The peer map a node gives its raft transport, and what it learns from applied configurations.

The map is the union of

* every member of the node's newest (appended) configuration and of its applied one (the
  driver's ``on_membership``: a removed member stays reachable until its removal is applied);
* on a leader, every peer its core still replicates to (``tracked``): a member it removed
  stays reachable until the core has told it that the removal committed and forgets it (the
  leader applies the removal first, and the member would never hear of it: it would stay a
  voter in its own eyes and campaign for ever);
* the members' addresses a joining node was given when it asked to join. They hold until the
  node has *applied* a configuration that lists the node itself: that one is at least as new
  as the cluster the node asked to join, so a join-time member it lacks has really been
  removed. Until then the node's log may hold nothing, or only old configurations (a brand-new
  member catching up from index 1 adopts the bootstrap voters first), and those addresses are
  the ones that let it answer the cluster.

Besides, the transport never forgets the peer that sends us entries (univrs/net/transport.py).
``univrs.server.removal.MembershipWatch`` calls ``PeerMap.applied`` with every applied
configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import attrs

from univrs.raft.messages import Membership

log = logging.getLogger("univrs.node")


@attrs.define(eq=False)
class PeerMap:
    """Builds the transport's peer map (see the module docstring).

    ``publish`` receives the complete map of advertised addresses (this node's own entry
    included; the transport ignores it). ``tracked`` returns the peers the core replicates to
    now (the leader's progress); call ``refresh`` when that may have changed."""

    node_id: str
    publish: Callable[[dict[str, str]], None]
    tracked: Callable[[], Iterable[str]] = lambda: ()
    _known: dict[str, str] = attrs.field(factory=dict, init=False)  # last address of every id
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
        self._known.update(peers)
        self._publish()

    def refresh(self) -> None:
        """Publish again if the tracked peers changed the map."""
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
        for nid in self.tracked():
            if nid not in peers and nid in self._known:
                peers[nid] = self._known[nid]
        if peers != self._published:
            self._published = peers
            self.publish(peers)
