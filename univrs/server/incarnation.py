"""One id, one incarnation: the runtime's part (bootstrap intent, probe, transport re-checks).

A member is an id *and* the incarnation of its data dir (``LogStore.incarnation``, random,
chosen when the data dir is created). The configuration binds member ids to incarnations
(``Membership.incarnations``); the transport refuses a peer of another incarnation
(``univrs.net.transport``). This module wires that into a node:

* ``check_bootstrap``: an empty data dir bootstraps a new cluster only with the "new" intent
  (``initial_cluster_state``), and only if no reachable bootstrap peer holds a history in which
  this id already served (bound to an incarnation, or removed) -- etcd's "member has already
  been bootstrapped" check. Such a node lost its data dir and must be replaced instead.
* ``probe_answerer``: this node's side of that question (``univrs.net.probe``).
* ``bound_incarnation`` and ``hold_incarnations``: the transport checks every hello against the
  configuration in effect, and re-checks open connections whenever its incarnations change.

A member that served only before the leader recorded its incarnation (a moment after the first
election) and then lost its data dir is recognised by a peer that pinned it: the peer took a
message from it under an unbound listing, so it holds the id to that incarnation, durably
(univrs/raft/gate.py ``_maybe_pin``), and answers with it as ``bound``. Known window (etcd has
a wider one): no reachable peer took a message from that member, so none pinned it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from univrs.config import NodeConfig
from univrs.errors import UnivrsError
from univrs.net.probe import ProbeAnswer, ProbeQuestion, ask_peer
from univrs.net.transport import RaftTransport
from univrs.runtime.view import RuntimeView
from univrs.server.wiring import client_ssl

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

log = logging.getLogger("univrs.node")

PROBE_TIMEOUT = 3.0  # seconds to wait for each bootstrap peer's answer


class BootstrapRefused(UnivrsError):
    """This node must not bootstrap a new cluster on its empty data dir (the message says why
    and what to do instead)."""


def history_problem(node_id: str, peer: str, answer: ProbeAnswer) -> str | None:
    """Why ``answer`` forbids ``node_id`` to bootstrap (None: it does not)."""
    if not answer.history:
        return None  # the peer is new as well (or waits to be joined)
    if not answer.same_cluster:
        return f"{peer} already holds the history of another cluster"
    if not answer.member:
        return f"{peer} holds a history that no longer lists {node_id} (it was removed)"
    if answer.bound is not None:
        return f"{peer} holds a history in which {node_id} is incarnation {answer.bound}"
    return None  # a member that never served yet (a late start of a new cluster)


async def check_bootstrap(config: NodeConfig, cluster_id: str, incarnation: str) -> None:
    """Raise BootstrapRefused if a reachable bootstrap peer shows that ``config.node_id``
    already served in the cluster this node would bootstrap. Unreachable peers count as new."""
    peers = {
        nid: addr
        for nid, addr in config.dial_addresses(config.bootstrap_addresses()).items()
        if nid != config.node_id
    }
    if not peers:
        return
    question = ProbeQuestion(src=config.node_id, cluster=cluster_id)
    answers: dict[str, ProbeAnswer | None] = {}

    async def ask(nid: str, addr: str) -> None:
        answers[nid] = await ask_peer(
            addr, question, timeout=PROBE_TIMEOUT, ssl_context=client_ssl(config)
        )

    async with trio.open_nursery() as nursery:
        for nid, addr in sorted(peers.items()):
            nursery.start_soon(ask, nid, addr)
    problems = [
        p
        for nid, answer in sorted(answers.items())
        if answer is not None and (p := history_problem(config.node_id, nid, answer))
    ]
    if problems:
        raise BootstrapRefused(
            f"refusing to bootstrap a new cluster on the empty data dir {config.data_dir} "
            f"(incarnation {incarnation}): {'; '.join(problems)}. This node lost the data dir "
            f"it served with, so it is a new incarnation of {config.node_id}, not the old "
            'member. Start it with initial_cluster_state = "existing" '
            "(--initial-cluster-state existing) and replace the old incarnation: "
            f"univrs cluster join <member-api> --replace --api {config.api_addr}"
        )
    answered = sum(1 for a in answers.values() if a is not None)
    log.info(
        "no bootstrap peer holds a history of this id",
        extra={"answered": answered, "peers": len(peers)},
    )


def probe_answerer(node: NodeHandle) -> Callable[[ProbeQuestion], ProbeAnswer]:
    """This node's answers to bootstrap probes (``univrs.net.probe.probe_route``)."""

    def answer(question: ProbeQuestion) -> ProbeAnswer:
        s = node.status()
        m = s.membership
        same = question.cluster == node.cluster_id
        # Membership is told only to an asker of this cluster (history_problem reads it only
        # then): an asker guessing ids does not learn who serves here, or as what.
        bound: str | None = None
        if same:
            # The configuration's binding, else the incarnation this node pinned under the
            # id (an unbound member it took a message from): either way the id served, at
            # another data dir than the empty one asking.
            bound = m.incarnation_of(question.src) or dict(s.pinned).get(question.src)
        return ProbeAnswer(
            node=node.node_id,
            same_cluster=same,
            history=s.last_index > 0 or node.runtime.last_snapshot_index > 0,
            member=same and question.src in m.members,
            bound=bound,
        )

    return answer


def bound_incarnation(view: RuntimeView) -> Callable[[str], str | None]:
    """The incarnation the configuration in effect lists for a peer (for the transport): the
    newest configuration's, else (a member it removes, until that is applied) the applied
    one's; None for an unbound member or a stranger. ``view``: the runtime's, made before the
    transport and the runtime (univrs/runtime/view.py)."""

    def bound(node_id: str) -> str | None:
        current = view.status().membership
        if node_id in current.members:
            return current.incarnation_of(node_id)
        applied = view.applied_membership
        return applied.incarnation_of(node_id) if node_id in applied.members else None

    return bound


def own_binding(view: RuntimeView, incarnation: str) -> Callable[[], tuple[int, bool]]:
    """Our side of the hello's freshness rule (for the transport): the log index of our newest
    configuration, and whether it binds our id to ``incarnation`` (our data dir's)."""

    def binding() -> tuple[int, bool]:
        status = view.status()
        return (status.config_index, status.membership.incarnation_of(status.id) == incarnation)

    return binding


async def hold_incarnations(view: RuntimeView, transport: RaftTransport) -> None:
    """Run forever: whenever the incarnations of the configuration change, have the transport
    close connections of incarnations no longer listed and redial with new expectations."""
    last: object = None
    while True:
        status = view.status()
        key = (status.config_index, status.membership.incarnations, view.applied_membership)
        if key != last:
            last = key
            transport.recheck_incarnations()
        await view.wait_changed()
