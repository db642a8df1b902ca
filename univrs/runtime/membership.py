"""Membership changes on the leader: add a learner, promote it, remove a member, transfer.

One server at a time (dissertation 4.1), not joint consensus: every change adds or removes a
single voter, so any two successive majorities overlap and no intermediate joint configuration
is needed; the core refuses a change while an earlier one is uncommitted and refuses changing
more than one voter at once. New members join as learners (they receive the log but neither
vote nor count toward commit) and are promoted only once their log is close to the leader's,
so adding a node never stalls commits while it catches up (dissertation 4.2.1).

Each function proposes a CONFIG entry through the driver and returns once it is applied here,
i.e. committed. All raise ``MembershipError`` with a message for the operator.

Incarnations (one id, one incarnation; ``Membership.incarnations``): a bootstrap configuration
lists its members unbound; ``record_incarnations`` (run on every node, acting while it leads)
binds each member to the incarnation its hellos named, with a change that changes no voter. A
join names the joiner's incarnation and adds it bound. A member whose data dir was lost is
replaced (``add_learner(..., replace=True)``): the old voter becomes a learner bound to the new
incarnation (one voter change) and is promoted once caught up, like any join.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio

from univrs.errors import CommitPending, NotLeader, ProposalDropped, UnivrsError
from univrs.raft.messages import Membership
from univrs.raft.node import RaftNode
from univrs.raft.ready import Role
from univrs.runtime.driver import RaftRuntime

DEFAULT_MAX_LAG = 100  # entries a learner may be behind the leader's last index to be promoted
BIND_RETRY = 1.0  # seconds between attempts to record incarnations when one was refused

log = logging.getLogger("univrs.membership")


class MembershipError(UnivrsError):
    """A membership change was refused (the message says why) or did not commit."""


class MembershipBusy(MembershipError):
    """The change cannot be made right now (another change or a leader transfer is under way,
    or it did not commit in time); retrying later may succeed."""


def _with(
    pairs: tuple[tuple[str, str], ...], node_id: str, addr: str | None
) -> tuple[tuple[str, str], ...]:
    kept = [(n, a) for n, a in pairs if n != node_id]
    if addr is not None:
        kept.append((node_id, addr))
    return tuple(sorted(kept))


def _without(pairs: tuple[tuple[str, str], ...], node_id: str) -> tuple[tuple[str, str], ...]:
    return tuple((n, a) for n, a in pairs if n != node_id)


REPLACE_HINT = (
    "if its data dir was lost, replace it: `univrs cluster join <member-api> --replace` on the "
    "node started with an empty data dir"
)


async def change(
    runtime: RaftRuntime,
    build: Callable[[Membership], Membership | None],
    *,
    timeout: float = 30.0,
) -> Membership:
    """Propose ``build(current)`` on this node (the leader) and wait until it is committed.

    ``build`` returns None when nothing needs to change (an idempotent retry). A leader
    refuses a change while the first entry of its term (it was just elected, or handed
    leadership by a transfer) or the previous configuration change is uncommitted
    (``CommitPending``): the change waits for that commit, within ``timeout``, and is then
    built and proposed again."""
    status = runtime.status()
    if status.role is not Role.LEADER:
        raise NotLeader(status.leader)
    target: list[Membership] = []

    def propose(core: RaftNode) -> tuple[int, int] | None:
        target.clear()
        new = build(core.status().membership)
        if new is None:
            return None
        target.append(new)
        return core.propose_membership(new)

    deadline = trio.current_time() + timeout
    while True:
        try:
            proposed: tuple[int, int] | None = await runtime.call(propose)
        except CommitPending as exc:
            if trio.current_time() >= deadline:
                raise MembershipBusy(str(exc)) from None
            await _term_committed_or_changed(runtime, runtime.status().last_index, deadline)
            continue
        except ProposalDropped as exc:  # an earlier change pending, a transfer under way
            raise MembershipBusy(str(exc)) from None
        break
    if proposed is None:
        return runtime.status().membership
    term, index = proposed
    with trio.move_on_at(deadline):
        await runtime.wait_applied(index)
        # The term of the committed entry at ``index``, when this node knows it (it applied a
        # CONFIG entry there lately): ours if it is the proposal's term (one entry per index
        # and term), another leader's otherwise.
        applied_term = runtime.applied_config_term(index)
        if applied_term == term:
            return target[0]
        if applied_term is not None:
            raise MembershipBusy(
                "the change was overwritten by a new leader before it committed; retry"
            )
        # A snapshot from the leader covered ``index``: it does not say which entry sat there
        # (ours may have committed, and later changes applied after it, s15-small). What
        # is known is the committed configuration: if the change is in effect there (the
        # builder finds nothing to do, as for a retry), that is the answer; otherwise the
        # outcome is unknown, never "committed".
        applied = runtime.applied_membership
        if applied == target[0] or _in_effect(build, applied):
            return applied
        raise MembershipBusy(
            "a snapshot from the leader covered the change before this node applied it: "
            "whether it committed is unknown; retry (a retry changes nothing if it did)"
        )
    raise MembershipBusy(f"the change did not commit within {timeout:g}s (no quorum?)")


def _in_effect(build: Callable[[Membership], Membership | None], applied: Membership) -> bool:
    """True if ``applied`` (a committed configuration) already holds the change ``build``
    makes: the builder, asked again as for a retry, has nothing to do. A builder that
    refuses the configuration now (the member since promoted or removed) says nothing."""
    try:
        return build(applied) is None
    except MembershipError:
        return False


async def _term_committed_or_changed(runtime: RaftRuntime, last: int, deadline: float) -> None:
    """Return once ``last`` (the leader's last index when it refused: the entry it waits for
    is at or before it) is applied here, or the role or term changed, or at ``deadline``."""
    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = deadline

        async def first(wait: Callable[[], Any]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(first, functools.partial(runtime.wait_applied, last))
        nursery.start_soon(first, runtime.wait_changed)


async def add_learner(
    runtime: RaftRuntime,
    node_id: str,
    raft_addr: str,
    api_addr: str | None,
    *,
    incarnation: str | None = None,
    replace: bool = False,
) -> Membership:
    """Add ``node_id`` as a learner, bound to ``incarnation`` when given. Idempotent for a
    learner with the same address (and incarnation).

    ``replace``: ``node_id`` may already be a member, under another incarnation whose data
    dir was lost; it becomes a learner bound to ``incarnation`` (a voter is demoted: one voter
    change), to be promoted once caught up.
    """

    def build(m: Membership) -> Membership | None:
        bound = m.incarnation_of(node_id)
        if replace and node_id in m.members:
            return _replace(m, node_id, raft_addr, api_addr, incarnation)
        if node_id in m.voters:
            raise MembershipError(
                f"node id {node_id!r} is already a voter of this cluster; {REPLACE_HINT}"
            )
        if node_id in m.learners:
            if m.address_of(node_id) == raft_addr and incarnation in (None, bound):
                return None  # a retried join: it is already there
            if m.address_of(node_id) == raft_addr and bound is None:
                # Added before it said which incarnation it is (an interrupted join): bind it.
                return attrs.evolve(m, incarnations=_with(m.incarnations, node_id, incarnation))
            where = f"at {m.address_of(node_id)}" + (f" as incarnation {bound}" if bound else "")
            raise MembershipError(
                f"node id {node_id!r} is already a learner of this cluster {where}; remove it "
                f"first, or {REPLACE_HINT}"
            )
        _check_address_free(m, node_id, raft_addr)
        return attrs.evolve(
            m,
            learners=m.learners | {node_id},
            addresses=_with(m.addresses, node_id, raft_addr),
            api_addresses=_with(m.api_addresses, node_id, api_addr),
            incarnations=_with(m.incarnations, node_id, incarnation),
        )

    def _replace(
        m: Membership, nid: str, addr: str, api: str | None, inc: str | None
    ) -> Membership | None:
        if inc is None:
            raise MembershipError("a replace must name the new incarnation")
        if m.incarnation_of(nid) == inc:
            return None  # a retried replace: done already
        if nid == runtime.node_id:
            raise MembershipError(
                f"{nid!r} is the leader, running on its data dir: there is nothing to replace"
            )
        _check_address_free(m, nid, addr)
        log.info(
            "replacing a member's incarnation",
            extra={"member": nid, "old": m.incarnation_of(nid) or "-", "new": inc},
        )
        return attrs.evolve(
            m,
            voters=m.voters - {nid},
            learners=m.learners | {nid},
            addresses=_with(m.addresses, nid, addr),
            api_addresses=_with(m.api_addresses, nid, api),
            incarnations=_with(m.incarnations, nid, inc),
        )

    return await change(runtime, build)


def _check_address_free(m: Membership, node_id: str, raft_addr: str) -> None:
    clash = [n for n, a in m.addresses if a == raft_addr and n != node_id]
    if clash:
        raise MembershipError(f"raft address {raft_addr} is already used by {clash[0]!r}")


async def bind_incarnations(runtime: RaftRuntime, learned: dict[str, str]) -> Membership:
    """Record ``learned`` (member id -> incarnation) for the members the configuration lists
    unbound; a change that changes no voter. Members already bound keep their incarnation."""

    def build(m: Membership) -> Membership | None:
        new = {
            nid: inc
            for nid, inc in learned.items()
            if nid in m.members and m.incarnation_of(nid) is None
        }
        if not new:
            return None
        return attrs.evolve(m, incarnations=tuple(sorted((*m.incarnations, *new.items()))))

    return await change(runtime, build)


async def record_incarnations(
    runtime: RaftRuntime, learned: Callable[[], dict[str, str]], own: str
) -> None:
    """Run forever: while this node leads, bind every unbound member of the configuration to
    the incarnation its hellos named (``learned()``; this node's own is ``own``).

    A bootstrap configuration lists its members unbound (every member writes the same entry
    at index 1); this turns it into one that counts each member only as the incarnation it
    was. The core refuses the change until the leader has committed an entry of its term;
    refusals are retried.
    """
    while True:
        status = runtime.status()
        if status.role is Role.LEADER:
            m = status.membership
            known = {**learned(), status.id: own}
            todo = {
                n: i for n, i in known.items() if n in m.members and m.incarnation_of(n) is None
            }
            if todo:
                try:
                    await bind_incarnations(runtime, todo)
                    log.info(
                        "recorded member incarnations",
                        extra={"members": ",".join(f"{n}={i}" for n, i in sorted(todo.items()))},
                    )
                except (MembershipError, NotLeader) as exc:
                    log.debug("recording incarnations deferred: %s", exc)
                    await trio.sleep(BIND_RETRY)  # a retry, not a synchronisation
                continue
        with trio.move_on_after(BIND_RETRY):  # hellos arrive without a runtime change
            await runtime.wait_changed()


def learner_lag(runtime: RaftRuntime, node_id: str) -> int | None:
    """How many entries the leader's log is ahead of ``node_id`` (None: unknown here)."""
    status = runtime.status()
    for peer in status.peers:
        if peer.id == node_id:
            return max(0, status.last_index - peer.match)
    return None


async def promote(
    runtime: RaftRuntime, node_id: str, *, max_lag: int = DEFAULT_MAX_LAG
) -> Membership:
    """Make learner ``node_id`` a voter, if its log is within ``max_lag`` of the leader's.

    The lag is measured each time the change is built (``change`` builds it again after
    waiting for a commit): measured once before, a learner that fell behind during the wait
    was promoted past ``max_lag`` (s13-audit2)."""

    def build(m: Membership) -> Membership | None:
        if node_id in m.voters:
            return None
        if node_id not in m.learners:
            raise MembershipError(f"{node_id!r} is not a learner of this cluster")
        lag = learner_lag(runtime, node_id)
        if lag is None or lag > max_lag:
            raise MembershipError(
                f"{node_id!r} is not caught up yet ({'unknown' if lag is None else lag} entries "
                f"behind, at most {max_lag} allowed); retry when it is"
            )
        return attrs.evolve(m, voters=m.voters | {node_id}, learners=m.learners - {node_id})

    return await change(runtime, build)


async def remove(runtime: RaftRuntime, node_id: str) -> Membership:
    """Remove voter or learner ``node_id`` (the leader itself too: it steps down after the
    change commits). Idempotent: removing a non-member is a no-op."""

    def build(m: Membership) -> Membership | None:
        if node_id not in m.members:
            return None
        if m.voters == {node_id}:
            raise MembershipError(f"{node_id!r} is the only voter; a cluster needs one")
        return attrs.evolve(
            m,
            voters=m.voters - {node_id},
            learners=m.learners - {node_id},
            addresses=_without(m.addresses, node_id),
            api_addresses=_without(m.api_addresses, node_id),
            incarnations=_without(m.incarnations, node_id),
        )

    return await change(runtime, build)


def best_transferee(runtime: RaftRuntime) -> str | None:
    """The most caught-up other voter, the natural target of a leader transfer."""
    status = runtime.status()
    voters = [p for p in status.peers if p.voter and p.id != status.id]
    if not voters:
        return None
    return max(voters, key=lambda p: (p.match, p.recent_active, p.id)).id


async def transfer_leader(
    runtime: RaftRuntime, target: str | None, *, timeout: float = 10.0
) -> str:
    """Hand leadership to ``target`` (default: the most caught-up voter); returns the new
    leader once it has taken over, or raises MembershipError after ``timeout`` seconds.

    The core gives one transfer an election timeout and then abandons it (dissertation 3.10:
    the leader must not stay unavailable for long): when the target was behind or slow to
    answer, as it may be on a loaded machine, that window passes before it could campaign.
    So while this node still leads and the target has not taken over, the transfer is asked
    for again once per election timeout until ``timeout``; asking while a transfer to the same
    target is under way changes nothing."""
    status = runtime.status()
    if status.role is not Role.LEADER:
        raise NotLeader(status.leader)
    chosen = target or best_transferee(runtime)
    if chosen is None:
        raise MembershipError("there is no other voter to transfer leadership to")
    if chosen == status.id:
        return chosen
    if chosen not in status.membership.voters:
        raise MembershipError(f"{chosen!r} is not a voter of this cluster")

    def ask(core: RaftNode) -> int:
        core.transfer_leader(chosen)
        return core.config.election_ticks_min

    try:
        window = runtime.tick_seconds * await runtime.call(ask)
    except (ProposalDropped, ValueError) as exc:
        raise MembershipError(str(exc)) from None
    asked = trio.current_time()
    with trio.move_on_after(timeout):
        while True:
            s = runtime.status()
            if s.leader == chosen and s.role is not Role.LEADER:
                return chosen
            if s.role is Role.LEADER and trio.current_time() - asked >= window:
                try:  # the core may have abandoned it: ask again (see the docstring)
                    await runtime.call(ask)
                except (ProposalDropped, ValueError) as exc:
                    raise MembershipError(str(exc)) from None
                except NotLeader:
                    pass  # stepping down: the target's election may be under way
                asked = trio.current_time()
            left = asked + window - trio.current_time()
            with trio.move_on_after(left if left > 0 else window):
                await runtime.wait_changed()
    raise MembershipError(f"{chosen!r} did not take over within {timeout:g}s")


def members(runtime: RaftRuntime, now: float | None = None) -> list[dict[str, Any]]:
    """Every member with its addresses, kind, and (on the leader) replication progress."""
    status = runtime.status()
    m = status.membership
    peers = {p.id: p for p in status.peers}
    now = trio.current_time() if now is None else now
    rows = []
    for node_id in sorted(m.members):
        row: dict[str, Any] = {
            "id": node_id,
            "raft_addr": m.address_of(node_id),
            "api_addr": m.api_address_of(node_id),
            "kind": "voter" if node_id in m.voters else "learner",
            "leader": node_id == status.leader,
            "incarnation": m.incarnation_of(node_id),
        }
        if node_id == status.id:
            row.update(match_index=status.last_index, lag=0, last_contact_s=0.0)
        elif node_id in peers:
            p = peers[node_id]
            contact = runtime.last_contact(node_id)
            row.update(
                match_index=p.match,
                lag=max(0, status.last_index - p.match),
                state=p.state,
                last_contact_s=None if contact is None else round(now - contact, 3),
            )
        rows.append(row)
    return rows
