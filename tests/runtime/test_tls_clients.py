"""Clients of a TLS node (in-process, loopback): ``tls.client_auth`` decides whether a client
without a certificate gets in (REST and the fast protocol alike); a certificate of another CA
never does."""

from __future__ import annotations

import pathlib
import ssl

import attrs
import pytest
import trio

from tests.runtime.nodes import Nodes, configs, settled_leader
from univrs.client.client import open_client
from univrs.errors import UnivrsError
from univrs.net import certs
from univrs.net.http import request_json
from univrs.net.tls import TlsFiles, client_context


@pytest.mark.parametrize("client_auth", ["optional", "require"])
async def test_client_auth_decides_who_gets_in(tmp_path: pathlib.Path, client_auth: str) -> None:
    folder = tmp_path / "certs"
    certs.create_ca(folder)
    cert, key = certs.create_node(folder, "n1", ["127.0.0.1"])
    ca = folder / certs.CA_CERT
    files = TlsFiles(ca_cert=ca, cert=cert, key=key, client_auth=client_auth)
    base = configs(tmp_path, members=1, spares=0)
    cfg = {"n1": attrs.evolve(base["n1"], tls=files)}
    ccert, ckey = certs.create_client(folder, "ops")
    with_cert = client_context(ca, ccert, ckey)
    without = client_context(ca)
    other = tmp_path / "other"
    certs.create_ca(other)
    fcert, fkey = certs.create_client(other, "ops")
    foreign = client_context(ca, fcert, fkey)  # trusts the node, shows a stranger's certificate

    async def rest_ok(context: ssl.SSLContext) -> bool:
        try:
            r = await request_json(cfg["n1"].api_addr, "GET", "/v1/health", ssl_context=context)
        except (OSError, trio.TooSlowError):
            return False
        return r.status == 200

    async def fast_ok(context: ssl.SSLContext) -> bool:
        ok = False
        try:
            async with open_client(
                cfg["n1"].raft_addr, ssl_context=context, timeout=3, connect_timeout=3
            ) as client:
                await client.mint_credits("alice", 1, "tls")
                ok = True
        except UnivrsError:
            pass
        except BaseExceptionGroup as group:  # raised through the client's nursery
            if group.subgroup(UnivrsError) is None:
                raise
        return ok

    async with trio.open_nursery() as nursery:
        nodes = Nodes(nursery, cfg)
        await nodes.start("n1")
        await settled_leader(nodes)
        assert await rest_ok(with_cert) and await fast_ok(with_cert)
        optional = client_auth == "optional"
        assert await rest_ok(without) is optional
        assert await fast_ok(without) is optional
        assert not await rest_ok(foreign)
        assert not await fast_ok(foreign)
        # Plaintext to the TLS ports gets nothing.
        with pytest.raises((OSError, ValueError)):
            await request_json(cfg["n1"].api_addr, "GET", "/v1/health", timeout=3)
        nursery.cancel_scope.cancel()
