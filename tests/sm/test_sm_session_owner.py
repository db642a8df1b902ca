"""s14-owner: a keyed command carries its caller's identity and the state machine refuses it
under a session another owner opened, at apply (the same on every replica).

Until s14 the owner check was the API's alone (s13-audit2 S1, ``api/service.
_check_session_owner``), made against the serving node's applied state: a forger whose keyed
write was built before the victim's session opening applied there (racing the victim's open)
passed it, and the state machine, which did not know who sent a keyed command, applied the
forger's command and cached its response under the victim's (session, seq): the victim's own
write with that key was then answered with the forger's response and never applied.
"""

from __future__ import annotations

from tests.sm.helpers import Log, spec
from univrs.sm import (
    ClusterStateMachine,
    Created,
    CreateWorkload,
    Envelope,
    ErrorCode,
    Failure,
    OpenSession,
    restore_plain,
    snapshot_plain,
    state_digest,
)

VICTIM, FORGER = "token:victim", "token:forger"


def create(name: str, client: str, seq: int, owner: str | None) -> Envelope:
    return Envelope(
        command=CreateWorkload(id=name, spec=spec(name)), client_id=client, seq=seq, owner=owner
    )


def open_victim(log: Log) -> str:
    opened = log(OpenSession(owner=VICTIM))
    assert isinstance(opened, Created)
    return opened.id


def test_a_forger_racing_the_victims_open_is_refused_at_apply() -> None:
    """The forger's entry follows the victim's open in the log (its write was built where the
    open had not applied yet: the API's check let it through). Fails on the code before
    s14-owner: the forger's workload was created under the victim's key and the victim's own
    write was answered with it (201, the forger's workload) and never applied."""
    log = Log()
    client = open_victim(log)
    session = log.sm.session(client)
    assert session is not None
    before = (session.last_index, session.max_seq, dict(session.responses))

    forged = log(create("evil", client, 1, FORGER))
    assert isinstance(forged, Failure) and forged.code is ErrorCode.SESSION_EXPIRED
    assert forged.message == f"session {client!r} is unknown"  # as if it did not exist
    assert log.sm.get_workload("evil") is None
    session = log.sm.session(client)
    assert session is not None  # untouched: its slot, its activity
    assert (session.last_index, session.max_seq, dict(session.responses)) == before

    mine = log(create("good", client, 1, VICTIM))
    assert isinstance(mine, Created) and mine.id == "good"
    assert log.sm.get_workload("good") is not None
    assert log(create("good", client, 1, VICTIM)) == mine  # a retry: answered, not applied
    # The forger's retry is refused again; it never learns the victim's response.
    again = log(create("evil", client, 1, FORGER))
    assert isinstance(again, Failure) and again.code is ErrorCode.SESSION_EXPIRED


def test_entries_without_an_owner_keep_their_old_meaning() -> None:
    """An entry written before owners travelled in the log (owner None) is not checked: it
    applies as it did, so a log of older entries replays to the same state (here: the old
    bug itself, which such a log may hold)."""
    log = Log()
    client = open_victim(log)
    assert isinstance(log(create("evil", client, 1, None)), Created)
    assert log(create("good", client, 1, VICTIM)) == log(create("evil", client, 1, None))
    assert log.sm.get_workload("good") is None


def test_a_session_of_no_known_owner_takes_any_owner() -> None:
    """A session opened by an entry without owner (older code) has owner "": nobody is known
    to own it, so an owned command uses it (as the API's check let it)."""
    log = Log()
    opened = log(OpenSession())
    assert isinstance(opened, Created)
    assert isinstance(log(create("w", opened.id, 1, FORGER)), Created)


def test_an_owner_is_valid_only_with_a_key() -> None:
    log = Log()
    client = open_victim(log)
    bare = Envelope(command=CreateWorkload(id="w", spec=spec("w")), owner=VICTIM)
    refused = log(bare)
    assert isinstance(refused, Failure) and refused.code is ErrorCode.INVALID_ARGUMENT
    long = log(create("w", client, 1, "token:" + "x" * 300))
    assert isinstance(long, Failure) and long.code is ErrorCode.INVALID_ARGUMENT
    assert log.sm.session(client) is not None and log.sm.session(client).max_seq == 0  # type: ignore[union-attr]


def test_replicas_and_a_restored_snapshot_refuse_alike() -> None:
    """A replica restored from a snapshot taken between the open and the forger's entry
    (the owner travels in the snapshot) refuses it as the replica that applied everything,
    in a batch entry too."""
    log = Log()
    client = open_victim(log)
    other = Log(restore_plain(snapshot_plain(log.sm)))
    batch = [create("evil", client, 1, FORGER), create("good", client, 1, VICTIM)]
    responses = [
        sm.apply_batch(batch, index=sm.last_applied_index + 1, term=1) for sm in (log.sm, other.sm)
    ]
    assert responses[0] == responses[1]
    assert isinstance(responses[0][0], Failure) and isinstance(responses[0][1], Created)
    assert state_digest(log.sm) == state_digest(other.sm)
    assert isinstance(log.sm, ClusterStateMachine) and log.sm.problems() == []
