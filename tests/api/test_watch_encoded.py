"""A fast-protocol watch poll's events are encoded once (``poll_events(encoded=True)``,
univrs/api/watch.py): the page's size is counted with each event's CBOR, and the answer is
made of those same bytes (``protocol.encoded_list``, ``protocol.encode_document``) instead
of encoding every event a second time. The answer's bytes are what encoding the documents
would give, so clients see nothing change."""

from __future__ import annotations

from typing import Any

import cbor2
import trio

from tests.api.test_write_outcomes import api_cluster
from tests.runtime.memcluster import wait_leader
from univrs.api.watch import poll_events
from univrs.client.protocol import Encoded, encode_document, encoded_list


def test_an_encoded_list_is_the_encoding_of_the_list() -> None:
    for docs in ([], [{"a": 1}], [{"id": "w" * n, "revision": n} for n in range(30)]):
        blobs = [cbor2.dumps(d) for d in docs]
        doc = {"events": encoded_list(blobs), "revision": 7, "node": "n1"}
        assert encode_document(doc).data == cbor2.dumps({**doc, "events": docs})


async def test_an_encoded_poll_answers_the_bytes_of_the_documents(nursery: trio.Nursery) -> None:
    cluster, services = await api_cluster(nursery)
    leader = await wait_leader(cluster)
    api = services[leader.node_id]
    page = await api.execute("workload.list", {}, consistency="local")
    for i in range(5):
        spec = {"name": f"w{i}", "image": "x", "args": ["b" * 100] * i}
        await api.execute("workload.create", {"id": f"w{i}", "spec": spec})
    args: dict[str, Any] = {"from_revision": page[0]["revision"] + 1, "kinds": "workloads"}
    deadline = trio.current_time() + 10
    plain = await poll_events(api.node, args, deadline)
    encoded = await poll_events(api.node, args, deadline, encoded=True)
    assert type(encoded["events"]) is Encoded
    assert len(plain["events"]) == 5
    assert encode_document(encoded).data == cbor2.dumps(plain)
