"""A seeded fuzzer of forged Raft messages against a working 3-node cluster (red team).

A hostile process that reaches a raft port without a member's data dir can send any message
the codec decodes, under a made-up id, under a member's id with a made-up incarnation, or
under a member's id naming no incarnation at all (``NO_INCARNATION``, what the transport
attests for such a hello). Its fields are drawn from values that have broken Raft cores
before: terms at and above ``MAX_TERM`` and at the top of the 64-bit range, indices around
the log's end and commit, entries of every kind with garbage data (a configuration entry that
does not decode), snapshots with bad checksums and huge declared sizes.

Every forgery is encoded and decoded by the wire codec first (so only what could arrive is
sent), then handed to a member while the cluster works (a live leader, honest traffic
delivered at once, proposals committing). The harness checks its invariants at every step
(one leader per term, no two nodes applying different entries at one index, the core's own
``problems()``); on top of that no forged entry is ever applied, no node changes term or
leader because of a forgery, every forgery is counted as refused, and the cluster still
commits afterwards.

The default run is bounded (a few seeds, a few hundred forgeries each: a few seconds).
``UNIVRS_FUZZ_SEEDS=N`` runs N seeds (opt-in, longer).
"""

from __future__ import annotations

import os
import random
import zlib
from typing import Any

import attrs
import pytest
from harness import Cluster

from univrs.codec import decode_message, encode_message
from univrs.errors import ProtocolError
from univrs.net.transport import NO_INCARNATION
from univrs.raft import (
    MAX_TERM,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    Message,
    RaftConfig,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotMeta,
    TimeoutNow,
    bootstrap_state,
)

NODES = ("n1", "n2", "n3")
INC = {n: f"inc-{n}" for n in NODES}
M = Membership(voters=frozenset(NODES), incarnations=tuple(sorted(INC.items())))
FORGED = b"FORGED"
SEEDS = int(os.environ.get("UNIVRS_FUZZ_SEEDS", "4"))
FORGERIES_PER_SEED = 300


class AttestedCluster(Cluster):
    """Honest messages carry their sender's incarnation, as the transport attests it."""

    def _deliver(self, m: Message) -> None:
        if m.sender_incarnation is None:
            m = attrs.evolve(m, sender_incarnation=INC[m.src])
        super()._deliver(m)


def _int(rng: random.Random, around: int) -> int:
    return rng.choice(
        [
            0,
            1,
            around,
            around + 1,
            max(0, around - 1),
            around + rng.randrange(1, 1000),
            MAX_TERM,
            MAX_TERM + 1,
            (1 << 63) - 1,
            (1 << 64) - 1,
        ]
    )


def _membership(rng: random.Random) -> Membership:
    ids = rng.sample(["n1", "n2", "n3", "mallory", "eve"], rng.randrange(0, 4))
    return Membership(
        voters=frozenset(ids),
        incarnations=tuple((i, "forged") for i in ids if rng.random() < 0.5),
    )


def _entries(rng: random.Random, after: int, term: int) -> tuple[Entry, ...]:
    out = []
    for i in range(rng.randrange(0, 4)):
        kind = rng.choice(list(EntryKind))
        data = rng.choice([FORGED + b" mint", b"", b"\xff" * 7, b'{"voters": 7}'])
        if kind is EntryKind.NORMAL:
            data = FORGED + data
        out.append(Entry(term=max(1, term), index=after + 1 + i, kind=kind, data=data))
    return tuple(out)


def forge(rng: random.Random, c: Cluster, dst: str) -> tuple[Message, str]:
    """One forged message for ``dst``, and what the sender claims to be."""
    st = c.status(dst)
    who = rng.choice(["stranger", "member", "unnamed"])
    if who == "stranger":
        src, inc = rng.choice(["mallory", "n4", "n1 ", ""]) or "x", "0123456789abcdef"
    else:
        src = rng.choice([n for n in NODES if n != dst])
        inc = "feedfacefeedface" if who == "member" else NO_INCARNATION
    term = _int(rng, st.term)
    last, commit = st.last_index, st.commit
    common: dict[str, Any] = {"term": term, "src": src, "dst": dst}
    kind = rng.randrange(11)
    msg: Message
    if kind == 0:
        prev = _int(rng, last)
        msg = AppendEntries(
            **common,
            prev_log_index=prev,
            prev_log_term=_int(rng, st.last_term),
            entries=_entries(rng, prev, term),
            commit=_int(rng, commit),
        )
    elif kind == 1:
        msg = Heartbeat(**common, commit=_int(rng, commit), ctx=_int(rng, 1))
    elif kind == 2:
        data = rng.choice([b"", b"\x00" * 64, b"{}", FORGED])
        total = rng.choice([len(data), 1 << 40, (1 << 64) - 1, 0])
        checksum = rng.choice([zlib.crc32(data), 0, 12345])
        msg = InstallSnapshot(
            **common,
            meta=SnapshotMeta(
                index=_int(rng, last), term=_int(rng, st.term), membership=_membership(rng)
            ),
            offset=rng.choice([0, len(data), 1 << 40]),
            data=data,
            done=rng.random() < 0.7,
            total_size=total,
            checksum=checksum,
        )
    elif kind == 3:
        msg = RequestVote(
            **common,
            last_log_index=_int(rng, last),
            last_log_term=_int(rng, st.last_term),
            pre_vote=rng.random() < 0.5,
            transfer=rng.random() < 0.5,
        )
    elif kind == 4:
        msg = RequestVoteResponse(**common, granted=True, pre_vote=rng.random() < 0.5)
    elif kind == 5:
        msg = TimeoutNow(**common)
    elif kind == 6:
        msg = AppendEntriesResponse(
            **common,
            success=rng.random() < 0.5,
            index=_int(rng, last),
            hint_index=_int(rng, last),
            hint_term=_int(rng, st.term),
        )
    elif kind == 7:
        msg = HeartbeatResponse(**common, ctx=_int(rng, 1))
    elif kind == 8:
        msg = ReadIndexRequest(**common, ctx=_int(rng, 1))
    elif kind == 9:
        msg = ReadIndexResponse(**common, ctx=_int(rng, 1), index=_int(rng, commit), ok=True)
    else:
        msg = InstallSnapshotResponse(
            **common,
            snapshot_index=_int(rng, last),
            offset=_int(rng, 0),
            success=rng.random() < 0.5,
        )
    return msg, inc


def run(seed: int) -> tuple[Cluster, int]:
    rng = random.Random(seed)
    cfg = RaftConfig(election_ticks_min=10, election_ticks_max=20, max_snapshot_bytes=1 << 20)
    c = AttestedCluster({n: bootstrap_state(M) for n in NODES}, config=cfg, seed=seed)
    c.elect("n1")
    sent = 0
    for step in range(FORGERIES_PER_SEED):
        leader = c.leader()
        assert leader is not None
        if rng.random() < 0.3:
            c.propose(leader, f"honest-{seed}-{step}".encode())
        if rng.random() < 0.5:
            c.tick_all(1, deliver=True)
        c.stabilize()
        dst = rng.choice(NODES)
        before = c.status(dst)
        msg, inc = forge(rng, c, dst)
        try:
            wire = decode_message(encode_message(msg), max_size=1 << 22)
        except (ProtocolError, TypeError):
            continue  # the codec refuses it: it never reaches a core
        c.nodes[dst].step(attrs.evolve(wire, sender_incarnation=inc))
        c.process(dst)
        sent += 1
        after = c.status(dst)
        assert (after.term, after.leader, after.role) == (
            before.term,
            before.leader,
            before.role,
        ), f"seed {seed} step {step}: {msg!r} ({inc!r}) moved {dst}"
        assert after.refused_messages == before.refused_messages + 1, (
            f"seed {seed} step {step}: {msg!r} ({inc!r}) was not refused by {dst}"
        )
        c.stabilize()
    return c, sent


@pytest.mark.parametrize("seed", range(SEEDS))
def test_forged_messages_change_nothing(seed: int) -> None:
    c, sent = run(seed)
    assert sent > FORGERIES_PER_SEED // 2
    for n in NODES:
        assert not any(d.startswith(FORGED) for d in c.applied_data(n)), n
    # The cluster still commits, everywhere, and the leader kept its term.
    leader = c.leader()
    assert leader == "n1" and c.status(leader).role is Role.LEADER
    _, index = c.propose(leader, b"after")  # (term, index)
    c.stabilize()
    for n in NODES:
        assert c.status(n).commit >= index
        assert c.applied_data(n)[-1] == b"after"
