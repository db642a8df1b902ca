"""``LeaderContact`` (univrs/api/contact.py): the freshness figure of a read's meta, read when
asked from the driver's last contact with the leader (no sampling task since round 19)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import attrs
import trio

from univrs.api.contact import LeaderContact
from univrs.raft.messages import Membership
from univrs.raft.ready import Role, Status


def _node(**kw: Any) -> Any:
    fields: dict[str, Any] = dict(
        id="n2", role=Role.FOLLOWER, term=3, vote="n1", leader="n1", commit=10, applied=10,
        persisted=10, last_index=10, last_term=3, first_index=1,
        membership=Membership(voters=frozenset({"n1", "n2", "n3"})),
    )  # fmt: skip
    fields.update(kw)
    contacts: dict[str, float] = {}
    node = SimpleNamespace(
        node_id="n2",
        state={"status": Status(**fields)},
        contacts=contacts,
    )
    node.status = lambda: node.state["status"]
    view = SimpleNamespace(last_status=node.status)
    node.runtime = SimpleNamespace(last_contact=contacts.get, view=view)
    return node


async def test_a_follower_counts_from_the_leaders_last_message(autojump_clock: Any) -> None:
    node = _node()
    contact = LeaderContact(node)
    assert contact.ms_since() is None  # never heard from n1
    node.contacts["n3"] = trio.current_time()
    assert contact.ms_since() is None  # another member is not the leader
    node.contacts["n1"] = trio.current_time()
    await trio.sleep(0.25)
    assert contact.ms_since() == 250
    node.contacts["n1"] = trio.current_time()  # the leader's next message
    assert contact.ms_since() == 0
    # A new leader: its own last message counts, not the old leader's.
    node.state["status"] = attrs.evolve(node.status(), leader="n3", term=4)
    await trio.sleep(0.1)
    assert contact.ms_since() == 350


async def test_the_leader_says_zero_and_no_leader_says_none() -> None:
    assert LeaderContact(_node(role=Role.LEADER, leader="n2", id="n2")).ms_since() == 0
    assert LeaderContact(_node(leader=None)).ms_since() is None
