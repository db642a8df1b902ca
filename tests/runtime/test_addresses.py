"""The peer map rules and the applied-configuration watch (univrs/runtime/addresses.py)."""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet

import pytest

from univrs.raft.messages import Membership
from univrs.runtime.addresses import PeerMap
from univrs.server.removal import MembershipWatch


def config(voters: AbstractSet[str], learners: AbstractSet[str] = frozenset()) -> Membership:
    members = voters | learners
    return Membership(
        voters=frozenset(voters),
        learners=frozenset(learners),
        addresses=tuple(sorted((n, f"{n}:1") for n in members)),
    )


def addresses(m: Membership) -> dict[str, str]:
    return dict(m.addresses)


def test_join_addresses_hold_until_a_configuration_listing_us_is_applied() -> None:
    published: list[dict[str, str]] = []
    peers = PeerMap("n7", publish=published.append)
    peers.hold_join_addresses({"n5": "n5:1", "n6": "n6:1", "n7": "n7:1"})
    assert published[-1] == {"n5": "n5:1", "n6": "n6:1"}
    # Catching up from index 1: the bootstrap configuration is appended, then applied.
    boot = config({"n1", "n2", "n3"})
    peers.on_membership(addresses(boot))
    peers.applied(boot)
    assert published[-1] == {"n1": "n1:1", "n2": "n2:1", "n3": "n3:1", "n5": "n5:1", "n6": "n6:1"}
    # The configuration that adds us is appended: still old members applied.
    added = config({"n5", "n6"}, {"n7"})
    peers.on_membership({**addresses(boot), **addresses(added)})
    assert set(published[-1]) == {"n1", "n2", "n3", "n5", "n6", "n7"}
    # Applied: the join-time addresses are released (and n1-n3 are no longer members).
    peers.on_membership(addresses(added))
    peers.applied(added)
    assert published[-1] == {"n5": "n5:1", "n6": "n6:1", "n7": "n7:1"}
    assert peers.join_addresses == {}


def test_a_join_time_member_removed_before_we_were_added_is_dropped() -> None:
    published: list[dict[str, str]] = []
    peers = PeerMap("n7", publish=published.append)
    peers.hold_join_addresses({"n5": "n5:1", "n6": "n6:1"})
    added = config({"n5"}, {"n7"})  # n6 was removed between our look and our addition
    peers.on_membership(addresses(added))
    assert "n6" in published[-1]  # appended only: it may still be overwritten
    peers.applied(added)
    assert published[-1] == {"n5": "n5:1", "n7": "n7:1"}


def test_removal_is_logged_once_and_a_joiner_is_never_called_removed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="univrs.node")
    joiner = MembershipWatch("n7", PeerMap("n7", publish=lambda _p: None))
    joiner.applied(config({"n1", "n2", "n3"}))  # old configurations while catching up
    assert joiner.removed is None
    joiner.applied(config({"n5", "n6"}, {"n7"}))
    joiner.applied(config({"n5", "n6", "n7"}))
    assert joiner.removed is None

    member = MembershipWatch("n3", PeerMap("n3", publish=lambda _p: None), was_member=True)
    member.applied(config({"n1", "n2"}))
    member.applied(config({"n1", "n2"}))
    member.applied(config({"n1", "n2", "n4"}))
    assert member.removed is not None
    removed = [r for r in caplog.records if "was removed from the cluster" in r.getMessage()]
    assert len(removed) == 1 and removed[0].levelno == logging.WARNING
