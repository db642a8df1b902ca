"""s14-review2: a snapshot's object ids are keys in the LMDB tables, and the indexes join two ids
with a NUL (``sm_store.SEP``): workload ``a`` with instance ``b NUL c`` and workload ``a NUL b``
with instance ``c`` are the one index key ``a NUL b NUL c``. No command can name such an id
(``id_problem``), but the snapshot readers took any string, so a hostile snapshot installed on
an LMDB replica left its workload index out of date (``problems()`` said so; the replica in
memory had none), and the replicas' later answers could differ. Both readers (the full one and
the staging's canonical checks, remembered shapes included) now refuse such rows.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest

from tests.sm.helpers import node_info, spec
from univrs import codec
from univrs.errors import DecodeError
from univrs.sm import ClusterStateMachine, CreateWorkload, RegisterNode
from univrs.sm.snapshot import snapshot_plain
from univrs.sm.snapshot_canon import canonical_instance_row, canonical_workload_row
from univrs.sm.snapshot_read import restore_plain
from univrs.storage.sm_ingest import staged_plain
from univrs.storage.sm_journal import _ALL_DBS, _objects_on
from univrs.storage.sm_store import LmdbStore


def _plain() -> dict[str, Any]:
    """Workloads ``a`` and ``ab``, node ``n1``, instance ``c`` of ``ab`` on ``n1``."""
    sm = ClusterStateMachine()
    sm.apply(CreateWorkload(id="a", spec=spec("a")), index=1, term=1, time_ms=1)
    sm.apply(CreateWorkload(id="ab", spec=spec("b")), index=2, term=1, time_ms=2)
    sm.apply(RegisterNode(info=node_info("n1")), index=3, term=1, time_ms=3)
    plain = snapshot_plain(sm)
    plain["instances"] = [["c", "ab", "n1", "running", "", 4, 4]]
    assert restore_plain(copy.deepcopy(plain)).problems() == []
    return plain


def _colliding() -> dict[str, Any]:
    plain = _plain()
    plain["workloads"][1][0] = "a\x00b"
    plain["instances"] = [
        ["b\x00c", "a", None, "pending", "", 5, 5],
        ["c", "a\x00b", None, "pending", "", 6, 6],
    ]
    return plain


def test_ids_whose_index_keys_collide_are_refused_in_memory_and_in_lmdb(
    tmp_path: pathlib.Path,
) -> None:
    """Before: accepted by both; the LMDB replica's ``by_workload`` held one key for the two
    pairs (``workload -> instances index is out of date``), the memory replica's both."""
    with pytest.raises(DecodeError, match="NUL"):
        restore_plain(_colliding())
    store = LmdbStore(str(tmp_path / "state.lmdb"), sync=False, map_size=1 << 24)
    try:
        with pytest.raises(DecodeError, match="NUL"):
            restore_plain(_colliding(), objects=_objects_on(store))
    finally:
        store.close()


def _nul_in(where: str) -> dict[str, Any]:
    plain = _plain()
    if where == "workload id":  # of no instance ("a" < "a NUL" < "ab": order kept)
        plain["workloads"][0][0] = "a\x00"
    elif where == "instance id":
        plain["instances"][0][0] = "c\x00d"
    elif where == "instance's workload":
        plain["workloads"][1][0] = "a\x00b"
        plain["instances"][0][1] = "a\x00b"
    elif where == "instance's node":
        plain["nodes"][0][0] = "n1\x00x"
        plain["instances"][0][2] = "n1\x00x"
    elif where == "node id":  # of no instance
        plain["nodes"][0][0] = "n1\x00x"
        plain["instances"][0][2] = None
    return plain


WHERE = ["workload id", "instance id", "instance's workload", "instance's node", "node id"]


@pytest.mark.parametrize("where", WHERE)
def test_a_nul_in_any_stored_id_is_refused_by_both_readers(
    tmp_path: pathlib.Path, where: str
) -> None:
    plain = _nul_in(where)
    with pytest.raises(DecodeError, match="NUL"):
        restore_plain(copy.deepcopy(plain))
    # the staging's one walk declines it (None: the full reader, above, decides) and
    # writes nothing
    store = LmdbStore(str(tmp_path / "probe"), sync=False, map_size=1 << 24)
    try:
        for name in _ALL_DBS:
            store.db(name)
        assert staged_plain(codec.encode_plain(plain), store) is None
        with store.env.begin() as txn:
            assert all(txn.stat(store.db(name))["entries"] == 0 for name in _ALL_DBS)
    finally:
        store.close()


def test_the_canonical_checks_refuse_a_nul_id_also_for_a_remembered_shape() -> None:
    """``canonical_workload_row`` remembers a row's shape (its item types) and then checks
    only values: a row of a shape seen before with a NUL in its id is refused too."""
    row = _plain()["workloads"][0]
    assert canonical_workload_row(row)  # its shape is remembered now
    assert canonical_workload_row(list(row))  # the remembered path
    hostile = [row[0] + "\x00x", *row[1:]]
    assert not canonical_workload_row(hostile)
    instance: list[Any] = ["c", "ab", "n1", "running", "", 4, 4]
    assert canonical_instance_row(instance)
    for at in (0, 1, 2):
        bad = list(instance)
        bad[at] = f"{instance[at]}\x00"
        assert not canonical_instance_row(bad)
