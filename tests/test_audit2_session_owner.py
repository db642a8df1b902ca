"""s13-audit2: a keyed write under another caller's idempotency session (REST, auth on).

Session ids are log positions (``c<index>``), easy to guess. Closing another caller's session
was refused already (tests/api/test_redteam_sessions.py); *writing* under it was not: a caller
with a ``write`` token that sent a write keyed ``<victim's id>:<victim's next seq>`` had its
own command applied and its response cached under the victim's key, so the victim's write
with that key was answered with the forger's response (201, another workload) and never
applied: a write acknowledged and lost. A keyed write under a session owned by another
identity is now refused as ``session-expired`` (as if the session did not exist: nothing is
told about it), on the serving node and again on the leader.
"""

from __future__ import annotations

import pathlib

from tests.api.helpers import WORKLOAD, open_cluster
from tests.api.test_auth import bearer, bootstrap, call, code
from univrs.client import open_client
from univrs.net.http import HttpResponse


async def test_a_write_under_another_callers_session_is_refused(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path, size=1, auth_enabled=True) as cluster:
        node = await cluster.wait_leader()
        admin = await bootstrap(cluster)
        async with open_client(cluster.client_addresses(), token=admin) as client:
            victim, forger = [
                (await client.create_token(name=name, roles=["write"]))["secret"]
                for name in ("victim", "forger")
            ]
        status, body = await call(cluster, node, "POST", "/v1/sessions", victim, {})
        assert status == 201, body
        session = body["client_id"]

        async def create(name: str, token: str) -> HttpResponse:
            """A workload ``name`` created by ``token``'s caller under the victim's key."""
            return await cluster.http(
                node,
                "POST",
                "/v1/workloads",
                {"spec": {**WORKLOAD, "name": name}},
                headers={**bearer(token), "Idempotency-Key": f"{session}:1"},
            )

        r = await create("evil", forger)
        assert r.status == 409 and code(r.body) == "session-expired", (r.status, r.body)
        assert not any(w.spec.name == "evil" for w in node.runtime.sm.iter_workloads())

        r = await create("good", victim)
        assert r.status == 201, r.body
        assert r.body["spec"]["name"] == "good", r.body
        assert any(w.spec.name == "good" for w in node.runtime.sm.iter_workloads())


async def test_a_retried_token_creation_names_the_token_it_created(tmp_path: pathlib.Path) -> None:
    """A keyed ``token.create`` sent again (a client's retry: the same arguments, so the
    serving node draws another id and secret) is answered with the first creation; the answer
    said to revoke the token of the *retry's* id, which does not exist, so the caller could
    not tell which token was created (whose secret nobody holds)."""
    async with open_cluster(tmp_path, size=1) as cluster:
        node = await cluster.wait_leader()
        status, body = await call(cluster, node, "POST", "/v1/sessions", None, {})
        assert status == 201, body
        key = {"Idempotency-Key": f"{body['client_id']}:1"}
        args = {"name": "ci", "roles": ["read"]}
        first = await cluster.http(node, "POST", "/v1/tokens", args, headers=key)
        assert first.status == 201, first.body
        created = first.body["id"]
        again = await cluster.http(node, "POST", "/v1/tokens", args, headers=key)
        assert again.status == 409 and code(again.body) == "conflict", again.body
        assert created in again.body["error"]["message"], again.body
        assert [t.id for t in node.runtime.sm.tokens()] == [created]
