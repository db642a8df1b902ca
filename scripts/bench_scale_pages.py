"""First pages of a large LMDB state, bounded by ``opargs.PAGE_BYTES`` (issue 17, s15-budget).

Opens a copy of a format-4 ``state.lmdb`` (``--env``: e.g. a member's of a kept
``scripts/bench_scale --cluster-only --keep DIR`` run at 1,000,000 + 1,000,000), serves the
first page of ``workload.list``, ``instance.list`` and ``node.list`` at ``limit=MAX_LIMIT``
through the API's read handlers (``univrs.api.ops``, as a node does), then creates
``--big`` workloads whose documents are about ``--big-bytes`` each (ids before every generated
one, so they are the first page) through ``apply`` and pages through them from the start:
every page must hold at most ``PAGE_BYTES`` of items beyond its first item, end with ``next``
when it stops on bytes, and together the pages must give every workload once, in order.

Prints one JSON line (also ``--json PATH``): per page, items, encoded bytes and CPU seconds.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import time
from typing import Any

import cbor2

from univrs.api import ops
from univrs.api.opargs import PAGE_BYTES
from univrs.bench.report import print_json
from univrs.sm import CreateWorkload, WorkloadSpec
from univrs.storage.sm_tables import StateEnv


def serve(sm: Any, op: str, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the page, its figures): items, bytes of its items' CBOR, CPU seconds."""
    read = ops.handler(op).read
    assert read is not None
    cpu = time.process_time()
    page = read(args, sm)
    took = time.process_time() - cpu
    sizes = [len(cbor2.dumps(item)) for item in page["items"]]
    return page, {
        "items": len(sizes),
        "bytes": sum(sizes),
        "bytes_beyond_first": sum(sizes[1:]),
        "next": page["next"],
        "cpu_s": round(took, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", type=pathlib.Path, required=True)
    parser.add_argument("--work", type=pathlib.Path, required=True)
    parser.add_argument("--big", type=int, default=40)
    parser.add_argument("--big-bytes", type=int, default=100_000)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    (args.work / "state.lmdb").mkdir(parents=True)
    shutil.copy(args.env / "data.mdb", args.work / "state.lmdb" / "data.mdb")
    env = StateEnv(str(args.work / "state.lmdb"))
    sm = env.load()
    row: dict[str, Any] = {"loadavg_start": os.getloadavg(), "page_bytes": PAGE_BYTES}
    limit = ops.MAX_LIMIT
    first_node = next(iter(sm.iter_nodes()))
    for op, extra in (
        ("workload.list", {}),
        ("instance.list", {}),
        ("node.list", {}),
        ("instance.list", {"node_id": first_node.id}),
    ):
        name = op + ("" if not extra else " (one node's)")
        _, figures = serve(sm, op, {"limit": limit, **extra})
        assert figures["items"] > 0, (name, figures)
        assert figures["bytes"] <= PAGE_BYTES or figures["items"] == 1, (name, figures)
        row[f"first_page {name}"] = figures
    # Big workloads first in id order: the pages end on bytes, not on the limit.
    index, term, ms = sm.last_applied_index, sm.last_applied_term, sm.clock_ms
    value = "x" * 4000
    per = max(1, args.big_bytes // 4_020)
    ids = [f"big-{k:04d}" for k in range(args.big)]
    for ident in ids:
        spec = WorkloadSpec(
            name=ident, image="registry.example/big:1", env={f"V{j}": value for j in range(per)}
        )
        index += 1
        done = sm.apply(CreateWorkload(id=ident, spec=spec), index=index, term=term, time_ms=ms)
        assert getattr(done, "id", None) == ident, done
    pages: list[dict[str, Any]] = []
    seen: list[str] = []
    after: str | None = None
    while len(seen) < len(ids):
        more = {"after": after} if after is not None else {}
        page, figures = serve(sm, "workload.list", {"limit": limit, **more})
        assert figures["bytes"] <= PAGE_BYTES or figures["items"] == 1, figures
        assert page["next"] is not None, figures
        seen.extend(item["id"] for item in page["items"])
        after = page["next"]
        pages.append({k: v for k, v in figures.items() if k != "next"})
    assert seen[: len(ids)] == ids, seen[: len(ids) + 2]
    row["big_workloads"] = len(ids)
    row["big_workload_bytes"] = pages[0]["bytes"] // max(1, pages[0]["items"])
    row["big_pages"] = pages
    row["loadavg_end"] = os.getloadavg()
    env.close()
    shutil.rmtree(args.work, ignore_errors=True)
    print_json([row], args.json)


if __name__ == "__main__":
    main()
