"""s14-owner: a forger racing the victim's session open, through the API (auth on).

The API's owner check (s13-audit2 S1, ``api/writes.check_session_owner``) reads the serving
node's applied state. Here the forger's write is built on the leader *before* the victim's
open applied anywhere (the leader cannot commit: its acks are dropped), so it passes that
check, and lands in the log right after the open, keyed with the id the open will get (ids are
log positions). Fails on the code before s14-owner: the forger's workload was created under the
victim's key and the victim's own write was answered with it (201, "evil") and never applied.
Now the envelope carries the forger's identity and every replica refuses it at apply.
"""

from __future__ import annotations

from typing import Any

import trio

from tests.api.test_write_outcomes import IDS, SPEC, _Config, api_cluster, outcome_of
from tests.runtime.memcluster import MemCluster, wait_leader, wait_until
from univrs.api.auth import Caller
from univrs.errors import UnivrsError
from univrs.runtime.payload import BATCH_VERSION
from univrs.sm import state_digest


async def _race(
    nursery: trio.Nursery, monkeypatch: Any, older: dict[str, int] | None = None
) -> tuple[MemCluster, list[Any], Any]:
    """The forger's write built on the leader before the victim's open applied anywhere;
    returns the cluster, the forger's answer and the victim's answer to its own first write
    under the session (``older``: members of older code, ``api_cluster``)."""
    monkeypatch.setattr(_Config, "auth_enabled", True)
    cluster, services = await api_cluster(nursery, older)
    leader = await wait_leader(cluster)
    api = services[leader.node_id]
    admin = (await api.execute("token.bootstrap", {}))[0]["secret"]
    as_admin = Caller(token=admin)

    async def token(name: str) -> Caller:
        args = {"name": name, "roles": ["write"]}
        return Caller(token=(await api.execute("token.create", args, caller=as_admin))[0]["secret"])

    victim, forger = await token("v"), await token("f")

    cluster.deaf.add(leader.node_id)  # nothing commits: the open is applied nowhere yet
    last = leader.status().last_index
    opening = await outcome_of(nursery, api, "session.open", {}, caller=victim)
    await wait_until(lambda: leader.status().last_index > last, "the open to be appended")
    client = f"c{leader.status().last_index}"  # what it will be named
    assert client not in [s.client_id for s in leader.sm.stored_sessions()]
    evil = {"id": "evil", "spec": {**SPEC, "name": "evil"}}
    forged = await outcome_of(nursery, api, "workload.create", evil, key=(client, 1), caller=forger)
    await wait_until(lambda: leader.status().last_index > last + 1, "the forgery appended")
    cluster.deaf.clear()
    await wait_until(lambda: opening and forged, "both answers")
    assert opening[0]["client_id"] == client, opening
    good = {"id": "good", "spec": {**SPEC, "name": "good"}}
    mine, _ = await api.execute("workload.create", good, key=(client, 1), caller=victim)
    await wait_until(
        lambda: len({rt.applied_index for rt in cluster.runtimes.values()}) == 1,
        "every replica to apply everything",
    )
    assert not cluster.failures
    return cluster, forged, mine


async def test_a_forger_racing_the_victims_open_is_refused(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: Any
) -> None:
    cluster, forged, mine = await _race(nursery, monkeypatch)
    assert isinstance(forged[0], UnivrsError) and forged[0].code == "session-expired", forged
    assert mine["id"] == "good", mine
    for rt in cluster.runtimes.values():
        assert rt.sm.get_workload("evil") is None and rt.sm.get_workload("good") is not None
    assert len({state_digest(rt.sm) for rt in cluster.runtimes.values()}) == 1
    assert sorted(cluster.runtimes) == IDS


async def test_the_race_wins_while_a_member_predates_owners_in_entries(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: Any
) -> None:
    """Pins the gap docs/security.md and docs/api.md state (s15-small): while a member of the
    configuration applies payload versions up to 2 only (a rolling upgrade from before
    s14-owner), the leader writes no owners, so the only owner check is the API's, which reads
    the applied state; the same race then wins as before s14-owner: the forger's write applies
    under the victim's key and the victim's own first write is answered with it. Every replica
    agrees (no divergence); once every member applies version 3 the test above holds."""
    cluster, forged, mine = await _race(nursery, monkeypatch, {"c": BATCH_VERSION})
    assert forged[0]["id"] == "evil", forged
    assert mine["id"] == "evil", mine  # the victim's write was never applied
    for rt in cluster.runtimes.values():
        assert rt.sm.get_workload("evil") is not None and rt.sm.get_workload("good") is None
    assert len({state_digest(rt.sm) for rt in cluster.runtimes.values()}) == 1
