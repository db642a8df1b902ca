"""Red team: a caller closes only its own idempotency sessions (REST, auth on).

Session ids are log positions (``c<index>``), so anyone may guess another caller's. Closing
one used to need only a valid token of any role: a read-only token took a writer's
exactly-once retries away.
"""

from __future__ import annotations

import pathlib

from tests.api.helpers import open_cluster
from tests.api.test_auth import bootstrap, call, code
from univrs.client import open_client


async def test_a_read_token_cannot_close_a_writers_session(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1, auth_enabled=True) as cluster:
        node = await cluster.wait_leader()
        admin = await bootstrap(cluster)
        async with open_client(cluster.client_addresses(), token=admin) as client:
            read = (await client.create_token(name="reader", roles=["read"]))["secret"]
        status, body = await call(cluster, node, "POST", "/v1/sessions", admin, {})
        assert status == 201, body
        victim = body["client_id"]
        status, body = await call(cluster, node, "DELETE", f"/v1/sessions/{victim}", read)
        assert status == 404 and code(body) == "not-found", body
        assert node.runtime.sm.has_session(victim)
        status, body = await call(cluster, node, "DELETE", f"/v1/sessions/{victim}", admin)
        assert status == 200, body
        assert not node.runtime.sm.has_session(victim)
