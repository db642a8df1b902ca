"""The dashboard (/ui) in a real headless browser against a 3-node cluster of processes.

Playwright for Python drives Debian's chromium (``/usr/bin/chromium``, or ``$UNIVRS_CHROMIUM``);
it never downloads a browser. Without Playwright (the ``ui-test`` extra) or without chromium
the test is skipped with a message saying which is missing (``scripts/test`` installs both when
it runs as root on a machine with apt-get).

The page is loaded from the leader. It must show the leader and every member, a workload's
instances arriving one by one, request rates from ``/metrics``; then the leader (the node the
page came from) is killed with SIGKILL, and the page must show the new leader, the dead member,
the election, and instances that arrive after the failover (its watch moved to a survivor),
with no error in the browser console and no uncaught exception. The token typed into the
page's form travels as an ``Authorization`` header on every API request and in no URL.
With ``UNIVRS_UI_SCREENSHOT=<path.png>`` the test saves a screenshot taken after the failover
(``docs/img/dashboard-failover.png`` is made that way).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import random
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from univrs.tools.devcluster import LocalCluster, wait_for

from .conftest import DEADLINE

CHROMIUM = os.environ.get("UNIVRS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "univrs.dashboard-test-token"  # not a secret: this cluster runs without auth
WAIT_MS = int(DEADLINE * 2 * 1000)  # browser-side waits (the machine is shared and slow)
STORED = "() => [sessionStorage.getItem('univrs.token'), localStorage.getItem('univrs.token')]"


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: pip install -e '.[ui-test]' (browser tests)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"no chromium at {CHROMIUM}: apt-get install chromium (as root), or set "
            "UNIVRS_CHROMIUM to a Chromium binary (browser tests)"
        )
    return sync_playwright


class Api:
    """REST calls to whichever member answers; 503 (nothing applied) is retried."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def call(self, method: str, path: str, body: Any = None, timeout: float = DEADLINE) -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for node in [n for n in self.cluster.nodes if n.running()]:
                req = urllib.request.Request(
                    f"http://{node.api_addr}{path}",
                    data=None if body is None else json.dumps(body).encode(),
                    method=method,
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        return json.load(resp)
                except urllib.error.HTTPError as exc:
                    doc = json.load(exc)
                    code = doc.get("error", {}).get("code")
                    if code == "already-exists":
                        return doc  # a retry of a create with our own id that applied
                    if exc.code != 503:
                        raise AssertionError(f"{method} {path}: {exc.code} {doc}") from None
                    last = exc
                except OSError as exc:
                    last = exc
            time.sleep(0.2)
        raise AssertionError(f"{method} {path}: no member answered in time ({last})")


class Load(threading.Thread):
    """A few writes and reads per second so the rate charts move; bounded in time."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stop = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < end:
            nodes = [n for n in self.cluster.nodes if n.running()]
            if not nodes:
                return
            node = random.choice(nodes)
            for method, path, body in (
                ("POST", "/v1/credits/mint", {"to_peer": "alice", "amount": 1, "reason": "load"}),
                ("GET", "/v1/workloads?limit=1", None),
                ("GET", "/v1/credits/balances/alice", None),
            ):
                req = urllib.request.Request(
                    f"http://{node.api_addr}{path}",
                    data=None if body is None else json.dumps(body).encode(),
                    method=method,
                )
                with contextlib.suppress(OSError):  # the node may be the one just killed
                    urllib.request.urlopen(req, timeout=5).close()
            self.stop.wait(0.1)  # pacing, not synchronisation


class Heartbeats(threading.Thread):
    """Keeps the registered machines ready (they heartbeat as real machines would)."""

    def __init__(self, api: Api, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.api, self.ids = api, ids
        self.stop = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < end:
            for node_id in self.ids:
                with contextlib.suppress(AssertionError):  # during the failover: next round
                    self.api.call("POST", f"/v1/nodes/{node_id}/heartbeat", {}, timeout=3)
            self.stop.wait(2.0)  # a third of the 10 s TTL is the advice; pacing


def _running(page: Any, workload_id: str, count: int, desired: int) -> None:
    page.wait_for_selector(
        f'#workloads tr[data-workload="{workload_id}"][data-running="{count}"]'
        f'[data-desired="{desired}"]',
        timeout=WAIT_MS,
    )


def _shows_the_leader(page: Any, cluster: LocalCluster) -> None:
    """Wait until the page names the leader the members agree on (and marks its row)."""

    def agree() -> bool:
        leader = cluster.leader()
        if leader is None:
            return False
        row = page.locator(f'#members tr[data-member="{leader.node_id}"]')
        return bool(
            page.get_attribute("#leader", "data-leader") == leader.node_id
            and row.get_attribute("data-role") == "leader"
        )

    wait_for(agree, DEADLINE * 2, "the page to show the leader")


def _make_leader(api: Api, cluster: LocalCluster, node: Any) -> None:
    """Transfer leadership to ``node`` unless it leads already."""

    def leads() -> bool:
        if cluster.leader() is node:
            return True
        with contextlib.suppress(AssertionError):
            api.call("POST", "/v1/cluster/transfer-leader", {"target": node.node_id}, timeout=5)
        return False

    wait_for(leads, DEADLINE * 2, f"{node.node_id} to lead", every=0.5)


def test_dashboard_follows_a_failover(make_cluster: Any) -> None:
    sync_playwright = _playwright()
    # The test places instances by hand: the reconciler (on by default) would remove them as
    # surplus of a workload whose machines it does not consider ready.
    cluster: LocalCluster = make_cluster(3, extra_config="reconcile_resync_ms = 0\n")
    cluster.start_all()
    leader = cluster.wait_leader(DEADLINE * 2)
    api = Api(cluster)
    for machine, cpu in (("m1", 4000), ("m2", 8000)):
        api.call("POST", "/v1/nodes", {"id": machine, "capacity": {"cpu_millis": cpu,
                 "memory_bytes": cpu << 20}})  # fmt: skip
    heartbeats = Heartbeats(api, ["m1", "m2"])
    load = Load(cluster)
    console: list[str] = []
    network: list[str] = []
    page_errors: list[str] = []
    requests: list[tuple[str, dict[str, str]]] = []
    heartbeats.start()
    load.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1250})

                def on_console(msg: Any) -> None:
                    if msg.type not in ("error", "warning"):
                        return
                    # The browser's own network log (a killed member refuses connections;
                    # a member without a leader answers 503) is not the page failing.
                    if msg.text.startswith("Failed to load resource"):
                        network.append(msg.text)
                    else:
                        console.append(f"{msg.type}: {msg.text}")

                page.on("console", on_console)
                page.on("pageerror", lambda exc: page_errors.append(str(exc)))
                page.on("request", lambda r: requests.append((r.url, r.headers)))
                page.goto(f"http://{leader.api_addr}/ui/")
                page.wait_for_function(
                    "() => document.querySelectorAll('#members tr[data-ok=\"1\"]').length === 3",
                    timeout=WAIT_MS,
                )
                _shows_the_leader(page, cluster)

                # The token goes into the form, then into headers only.
                page.fill("#token-input", TOKEN)
                page.click("#token-save")
                since = len(requests)

                # A workload scaled to 3; its instances arrive one by one.
                wid = uuid.uuid4().hex
                iids = [uuid.uuid4().hex for _ in range(5)]
                api.call("POST", "/v1/workloads", {"id": wid, "spec": {"name": "web",
                         "image": "nginx:1.27", "replicas": 3}})  # fmt: skip
                _running(page, wid, 0, 3)
                for i in range(3):
                    iid = iids[i]
                    api.call("POST", "/v1/instances", {"id": iid, "workload_id": wid,
                             "node_id": f"m{1 + i % 2}"})  # fmt: skip
                    api.call("PUT", f"/v1/instances/{iid}/status", {"status": "running"})
                    _running(page, wid, i + 1, 3)
                page.wait_for_selector('#nodes tr[data-node="m2"][data-status="ready"]',
                                       timeout=WAIT_MS)  # fmt: skip
                page.wait_for_selector("#events tbody tr", timeout=WAIT_MS)
                page.wait_for_function(
                    "() => Number(document.querySelector('#writes-panel').dataset.rate || 0) > 0"
                    " && Number(document.querySelector('#reads-panel').dataset.rate || 0) > 0",
                    timeout=WAIT_MS,
                )
                page.wait_for_selector('#credits tr[data-peer="alice"]', timeout=WAIT_MS)

                shot = os.environ.get("UNIVRS_UI_SCREENSHOT")
                if shot:
                    page.wait_for_timeout(20000)  # for the picture: some history before
                # Kill the leader: the very node the page was loaded from (handed leadership
                # back first if an election on the loaded machine moved it).
                _make_leader(api, cluster, leader)
                cluster.kill(leader)
                survivors = [n for n in cluster.nodes if n.running()]
                new = cluster.wait_leader(DEADLINE * 2, among=survivors)
                assert new.node_id != leader.node_id
                _shows_the_leader(page, cluster)  # the new one (or a later one)
                assert page.get_attribute("#leader", "data-leader") != leader.node_id
                page.wait_for_selector(
                    f'#members tr[data-member="{leader.node_id}"][data-ok="0"]', timeout=WAIT_MS
                )
                page.wait_for_function(
                    "() => document.querySelectorAll('#leader-history li').length >= 2",
                    timeout=WAIT_MS,
                )
                assert page.locator(f'#leader-history li[data-leader="{new.node_id}"]').count()
                # Scaled after the failover: the new instances still arrive on the page.
                api.call("POST", f"/v1/workloads/{wid}/scale", {"replicas": 5})
                _running(page, wid, 3, 5)
                for i in range(3, 5):
                    iid = iids[i]
                    api.call("POST", "/v1/instances", {"id": iid, "workload_id": wid,
                             "node_id": f"m{1 + i % 2}"})  # fmt: skip
                    api.call("PUT", f"/v1/instances/{iid}/status", {"status": "running"})
                    _running(page, wid, i + 1, 5)
                assert page.text_content("#via") != leader.node_id
                # Let the charts show the failover (two more metric scrapes), then look.
                wait_for(
                    lambda: page.evaluate(
                        "() => document.querySelectorAll('#writes-chart .marker').length"
                    ),
                    DEADLINE,
                    "a leader-change marker on the writes chart",
                )
                if shot:
                    page.wait_for_timeout(8000)  # more chart points after the failover
                    pathlib.Path(shot).parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=shot, full_page=True)
            finally:
                browser.close()
    finally:
        load.stop.set()
        heartbeats.stop.set()
        load.join(10)
        heartbeats.join(10)

    assert page_errors == [], page_errors
    assert console == [], console
    api_requests = [(u, h) for u, h in requests[since:] if "/v1/" in u or "/metrics" in u]
    assert api_requests
    for url, headers in api_requests:
        assert headers.get("authorization") == f"Bearer {TOKEN}", url
        assert TOKEN not in url and "token" not in url.lower()
    # Every network failure the browser logged is about the killed member or an answer
    # during the election; none was a refused CORS or CSP request (those are console errors).
    assert all("Failed to load resource" in line for line in network)


def test_dashboard_asks_for_a_token_and_keeps_it_in_the_tab(make_cluster: Any) -> None:
    """With the state endpoints answering 401 until a token comes (as a node with auth on
    does; here the browser's request router plays that part, since auth is another branch's
    feature), the page asks for a token, keeps it in sessionStorage (localStorage only when
    asked to remember), sends it as a header and shows the state once it is accepted."""
    sync_playwright = _playwright()
    cluster: LocalCluster = make_cluster(1)
    cluster.start_all()
    node = cluster.wait_leader(DEADLINE * 2)
    api = Api(cluster)
    wid = uuid.uuid4().hex
    api.call("POST", "/v1/workloads", {"id": wid, "spec": {"name": "db", "image": "pg:17"}})
    secret = "univrs.good-token"
    refused: list[str] = []
    protected = ("/v1/workloads", "/v1/instances", "/v1/nodes", "/v1/watch", "/v1/credits")

    def guard(route: Any) -> None:
        request = route.request
        path = request.url.split(node.api_addr, 1)[-1]
        if path.startswith(protected) and request.headers.get("authorization") != (
            f"Bearer {secret}"
        ):
            refused.append(path)
            body = {"error": {"code": "unauthenticated", "message": "a token is needed"}}
            route.fulfill(status=401, content_type="application/json", body=json.dumps(body))
        else:
            route.continue_()

    console: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: (
                    console.append(m.text)
                    if m.type == "error" and not m.text.startswith("Failed to load resource")
                    else None
                ),
            )
            page.route("**/*", guard)
            page.goto(f"http://{node.api_addr}/ui/")
            page.wait_for_selector("#notice:not([hidden])", timeout=WAIT_MS)
            assert "needs an API token" in (page.text_content("#notice") or "")
            assert refused
            # The members panel needs no token.
            page.wait_for_selector(f'#leader[data-leader="{node.node_id}"]', timeout=WAIT_MS)
            page.fill("#token-input", "univrs.wrong")
            page.click("#token-save")
            wrong = len(refused)
            # (the probe lets Playwright run: its events are handled inside its calls)
            wait_for(
                lambda: page.wait_for_timeout(50) or len(refused) > wrong,
                DEADLINE,
                "the wrong token to be refused",
            )
            page.wait_for_selector("#notice", state="visible", timeout=WAIT_MS)
            page.fill("#token-input", secret)
            page.click("#token-save")
            page.wait_for_selector(f'#workloads tr[data-workload="{wid}"]', timeout=WAIT_MS)
            page.wait_for_selector("#notice", state="hidden", timeout=WAIT_MS)
            stored = page.evaluate(STORED)
            assert stored == [secret, None]
            page.check("#token-remember")
            page.click("#token-save")
            stored = page.evaluate(STORED)
            assert stored == [None, secret]
            page.click("#token-clear")
            stored = page.evaluate(STORED)
            assert stored == [None, None]
            assert all(secret not in url for url in refused)
        finally:
            browser.close()
    assert console == [], console


def test_dashboard_with_tokens_on(make_cluster: Any) -> None:
    """A node with auth on: the page asks for a token, and with a read token shows the state."""
    sync_playwright = _playwright()
    cluster: LocalCluster = make_cluster(1, extra_config="[auth]\nenabled = true\n")
    cluster.start_all()
    node = cluster.wait_leader(DEADLINE * 2)

    def call(path: str, body: Any, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(
            f"http://{node.api_addr}{path}", json.dumps(body).encode(), headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=DEADLINE) as resp:
            return json.load(resp)

    admin = call("/v1/tokens/bootstrap", {})["secret"]
    wid = uuid.uuid4().hex
    call("/v1/workloads", {"id": wid, "spec": {"name": "web", "image": "nginx"}}, admin)
    read = call("/v1/tokens", {"name": "dashboard", "roles": ["read"]}, admin)["secret"]
    console: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: (
                    console.append(m.text)
                    if m.type == "error" and not m.text.startswith("Failed to load resource")
                    else None
                ),
            )
            page.goto(f"http://{node.api_addr}/ui/")
            page.wait_for_selector("#notice", state="visible", timeout=WAIT_MS)
            assert "needs an API token" in (page.text_content("#notice") or "")
            page.wait_for_selector(f'#leader[data-leader="{node.node_id}"]', timeout=WAIT_MS)
            page.fill("#token-input", read)
            page.click("#token-save")
            page.wait_for_selector(f'#workloads tr[data-workload="{wid}"]', timeout=WAIT_MS)
            page.wait_for_selector("#notice", state="hidden", timeout=WAIT_MS)
        finally:
            browser.close()
    assert console == [], console
