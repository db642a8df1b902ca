"""A batch entry's changes handed to the watch history at once (``WatchHub.applied_many``)
leave exactly what handing them over one by one (``WatchHub.applied``) leaves (session 30:
a scale's revision encoded by ``captured.encode_workload_change``, its two rows read from
``workload_bytes``'s cache in one look-up, that case written out in ``applied_many``; the
young revisions leaving once per entry); and the stored bytes are those of the general
encode (``captured._encode_items``), the cache left as it leaves it.

The rules, over random batches of mixed commands and of scales, applied to the state on its
LMDB backend (its table puts a scale's new workload before the history encodes it: the cache
hit) and in memory (no put: the rows encoded or spliced by ``workload_bytes``): the same
revisions, stored bytes (``encode_changes``'s, decoding to the captured changes), kinds,
running totals, young revisions, compacted revision, dropped count and reads, whatever the
bounds; and ``workload_bytes``'s cache left as the one-by-one hand-over and the general
encode leave it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sm.strategies import SETUP, Client, steps
from univrs.errors import Compacted
from univrs.runtime.captured import _encode_items, decode_changes, encode_changes
from univrs.runtime.watch import WatchHub
from univrs.sm.commands import CreateWorkload, DeleteWorkload, Envelope, OpenSession, ScaleWorkload
from univrs.sm.events import ObjectKind
from univrs.sm.model import WorkloadSpec
from univrs.sm.objects import AppliedChanges
from univrs.sm.state import ClusterStateMachine
from univrs.storage.sm_row_bytes import cached, forget
from univrs.storage.sm_tables import StateEnv

ALL = frozenset(ObjectKind)
SPEC = WorkloadSpec(name="web", image="nginx:1.27", replicas=2, labels={"tier": "web"})

# scales (of workloads that exist, or not), creates and deletes, mostly scales
scale_heavy = st.lists(
    st.one_of(
        st.builds(
            ScaleWorkload,
            id=st.sampled_from(["w0", "w1", "s0", "s1", "s2"]),
            replicas=st.integers(0, 30),
        ),
        st.builds(
            ScaleWorkload, id=st.sampled_from(["w0", "s0", "s1"]), replicas=st.integers(0, 300)
        ),
        st.builds(CreateWorkload, id=st.sampled_from(["s0", "s1", "s2"]), spec=st.just(SPEC)),
        st.builds(DeleteWorkload, id=st.sampled_from(["s0", "s1", "s2"])),
    ).map(lambda command: (command, ("session", 0), None)),
    max_size=60,
)


def _state(lmdb: bool, folder: str) -> tuple[ClusterStateMachine, Any]:
    if not lmdb:
        return ClusterStateMachine(), None
    env = StateEnv(str(Path(folder) / "state"))
    return env.load(), env


def _live(hub: WatchHub) -> Any:
    head = hub._head
    return (
        hub._revisions[head:],
        hub._sources[head:],
        hub._kinds[head:],
        hub._ends_count[head:],
        hub._ends_cost[head:],
        list(hub._young.items()),
        list(hub._young_order),
        hub.revision,
        hub.compacted_revision,
        hub.dropped_events,
        hub._total_count,
        hub._total_cost,
    )


def _reads(hub: WatchHub, start: int) -> Any:
    try:
        events, through = hub.read(ALL, start, limit=1_000_000)
    except Compacted:
        return None
    return [(e.revision, e.type, e.kind, e.id, e.object, e.prev) for e in events], through


def _cache() -> dict[str, Any]:
    return {ident: tuple(entry) for ident, entry in cached().items()}


def _restore(cache: dict[str, Any]) -> None:
    cached().clear()
    cached().update(cache)


def _same_cache(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        all(x is y or x == y for x, y in zip(a[k], b[k], strict=True)) for k in a
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(steps, scale_heavy.map(lambda script: SETUP + script)),
    st.integers(1, 70),
    st.booleans(),
    st.integers(0, 40),
    st.integers(0, 40_000),
    st.integers(0, 9),
    st.integers(0, 400),
)
def test_a_batch_handed_over_at_once_leaves_what_one_by_one_leaves(
    script: list[Any],
    chunk: int,
    lmdb: bool,
    capacity: int,
    max_bytes: int,
    young: int,
    size: int,
) -> None:
    forget()
    with tempfile.TemporaryDirectory(prefix="univrs-watch-many.") as folder:
        sm, env = _state(lmdb, folder)
        try:
            _check(sm, script, chunk, capacity, max_bytes, young, size)
        finally:
            if env is not None:
                env.close()


def _check(
    sm: ClusterStateMachine,
    script: list[Any],
    chunk: int,
    capacity: int,
    max_bytes: int,
    young: int,
    size: int,
) -> None:
    client = Client()
    many = WatchHub(capacity=capacity, max_bytes=max_bytes, young=young)
    one = WatchHub(capacity=capacity, max_bytes=max_bytes, young=young)
    script = [(OpenSession(), None, None), *script]
    for hub in (many, one):
        hub.reset(sm.revision)
    for index, at in enumerate(range(0, len(script), chunk), start=1):
        part = script[at : at + chunk]
        sent = [client.envelope(command, wrap, sm) for command, wrap, _ in part]
        captured: list[tuple[int, AppliedChanges]] = []
        with sm.batch():
            responses = sm.apply_batch(
                sent, index=index, term=1, time_ms=client.time(part[-1][2]), captured=captured
            )
        for envelope, answer in zip(sent, responses, strict=True):
            client.learn(envelope, answer)
        before = _cache()
        many.applied_many(captured, size)
        after_many = _cache()
        _restore(before)  # (the same cache for each)
        for revision, changes in captured:
            one.applied(revision, changes, size)
        after_one = _cache()
        _restore(before)
        general = {r: _encode_items(c.items) for r, c in captured if c.items}  # the reference
        assert _same_cache(after_many, _cache()) and _same_cache(after_one, _cache())
        assert _live(many) == _live(one)
        for revision, changes in captured:
            if changes.items:
                stored = many._sources[many._revisions.index(revision)]
                assert isinstance(stored, bytes)
                assert stored == general[revision] == encode_changes(changes)
                assert decode_changes(stored, revision) == changes
    for start in range(1, sm.revision + 2):
        assert _reads(many, start) == _reads(one, start)


def test_a_scale_on_the_lmdb_state_is_encoded_from_the_cache() -> None:
    """The case the rule above covers most: the state's table put each scale's new workload
    (the newest of its id in the cache, the one before it next), so ``applied_many`` reads
    both rows from the cache; its bytes are ``encode_changes``'s."""
    forget()
    with tempfile.TemporaryDirectory(prefix="univrs-watch-many.") as folder:
        sm, env = _state(True, folder)
        try:
            client = sm.apply(OpenSession(), index=1, term=1).id  # type: ignore[union-attr]
            with sm.batch():
                creates = [CreateWorkload(id=f"w{k}", spec=SPEC) for k in range(8)]
                sm.apply_batch(creates, index=2, term=1)
            hub = WatchHub(capacity=50, young=16)
            hub.reset(sm.revision)
            seq = 0
            for index in range(3, 30):
                batch = []
                for k in range(8):  # (each workload once: its newest object just put)
                    seq += 1
                    scale = ScaleWorkload(id=f"w{(index + k) % 8}", replicas=seq % 9)
                    batch.append(Envelope(command=scale, client_id=client, seq=seq))
                captured: list[tuple[int, AppliedChanges]] = []
                with sm.batch():
                    sm.apply_batch(batch, index=index, term=1, captured=captured)
                hits = 0
                for _, changes in captured:
                    ((_, ident, before, after),) = changes.items
                    entry = cached()[ident]
                    hits += entry[0] is after[0] and entry[3] is before[0]
                hub.applied_many(captured, 100)
                assert hits == len(captured) == 8
                for revision, changes in captured:
                    at = hub._revisions.index(revision)
                    assert hub._sources[at] == encode_changes(changes)
        finally:
            env.close()
