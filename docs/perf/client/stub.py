"""A stub node for measuring the client library's CPU per write (docs/performance.md, "Round 19
(s19-client)"): speaks the fast protocol's hello and answers every request, like a leader's
group commit, every ``--tick`` seconds in one frame per connection: ``session.open`` with a
fresh client id, any other request with a minimal write answer ``{"id", "version"}`` and
``meta.index``. Prints its port on stdout. Run from the tree under test's PYTHONPATH or any:
only the protocol's encoding is used.

    python docs/perf/client/stub.py [--tick 0.01]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

import trio
from trio_websocket import ConnectionClosed, serve_websocket

from univrs.client import protocol

PENDING: list[tuple[Any, list[dict[str, Any]]]] = []


async def handler(request: Any) -> None:
    ws = await request.accept()
    try:
        protocol.check_client_hello(await ws.get_message())
        members = {"stub": {"client": None, "api": None}}
        await ws.send_message(protocol.encode_server_hello("stub", "stub", members))
        answers: list[dict[str, Any]] = []
        PENDING.append((ws, answers))
        version = 0
        while True:
            for req in protocol.decode_requests(await ws.get_message()):
                assert isinstance(req, protocol.Request), req
                version += 1
                if req.op == "session.open":
                    answers.append({"id": req.id, "ok": {"client_id": f"c{version}-{id(ws)}"}})
                elif req.op == "session.close":
                    answers.append({"id": req.id, "ok": {"closed": True}})
                else:
                    ok = {"id": req.args.get("id", "x"), "version": version}
                    answers.append({"id": req.id, "ok": ok, "meta": {"index": version}})
    except ConnectionClosed:
        return


async def flusher(tick: float) -> None:
    while True:
        await trio.sleep(tick)
        for ws, answers in PENDING:
            if answers:
                frame = protocol.encode_responses("stub", answers)
                answers.clear()
                with contextlib.suppress(ConnectionClosed):
                    await ws.send_message(frame)


async def main(tick: float) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(server.port, flush=True)
        nursery.start_soon(flusher, tick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tick", type=float, default=0.01)
    trio.run(main, parser.parse_args().tick)
    sys.exit(0)
