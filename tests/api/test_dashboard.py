"""The dashboard's static route and CORS (univrs/api/dashboard.py), on an in-process cluster.

What these pin down: ``/ui/`` serves a fixed set of read-only package files, identical on
every node and for every caller, with ``Content-Security-Policy: default-src 'self'`` (plus
``connect-src`` for the members' APIs), no inline script or style and no HTML built from
strings in the scripts; any other name under ``/ui/`` is a 404; CORS is granted for ``GET``
(with an ``Authorization`` header) to the members' own API origins only. The browser tests
(tests/process/test_ui_browser.py) show the page working against a real cluster.
"""

from __future__ import annotations

import http.client
import importlib.resources
import pathlib
import re
from html.parser import HTMLParser

import trio

from univrs.api.dashboard import FILES

from .helpers import open_cluster


def _raw(
    addr: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


async def raw(
    addr: str, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return await trio.to_thread.run_sync(_raw, addr, method, path, headers)


def package_file(name: str) -> bytes:
    return importlib.resources.files("univrs.api").joinpath("ui", name).read_bytes()


class _Audit(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"inline handler {name} on <{tag}>")
            if name == "style":
                self.problems.append(f"inline style on <{tag}>")
            if value and value.strip().lower().startswith(("javascript:", "data:")):
                self.problems.append(f"{name}={value!r} on <{tag}>")
            if name in ("src", "href") and value and re.match(r"^[a-z]+:|^//", value):
                self.problems.append(f"external {name}={value!r} on <{tag}>")
        if tag == "script":
            if not d.get("src"):
                self.problems.append("inline <script>")
            else:
                self.scripts.append(d["src"] or "")
            self._in_script = True
        if tag == "style":
            self.problems.append("inline <style>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline script text")


def test_the_page_has_no_inline_script_and_no_html_from_strings() -> None:
    audit = _Audit()
    audit.feed(package_file("index.html").decode())
    assert audit.problems == []
    assert audit.scripts == ["app.js"]
    # Show the audit can fail: an inline handler and an inline script are both caught.
    bad = _Audit()
    bad.feed('<button onclick="x()">x</button><script>alert(1)</script>')
    assert len(bad.problems) == 3
    for name in FILES:
        if not name.endswith(".js"):
            continue
        text = package_file(name).decode()
        # Names of workloads and nodes are data: they never reach the DOM as markup.
        sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", 'setAttribute("style"')  # fmt: skip
        for sink in sinks:
            assert sink not in text, (name, sink)
        # No other site is ever fetched: every URL is built from a member's API address.
        urls = set(re.findall(r"https?://[^\s\"'`]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, name
        # The token goes in a header only: no query string carries it.
        assert not re.search(r"[?&](token|access_token)=", text), name


async def test_ui_files_csp_and_refusals(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        nodes = cluster.running()
        apis = [cluster.api(n) for n in nodes]
        status, headers, _ = await raw(apis[0], "GET", "/ui")
        assert status == 308 and headers["location"] == "/ui/"
        for api in apis:
            status, headers, body = await raw(api, "GET", "/ui/")
            assert status == 200
            assert headers["content-type"].startswith("text/html")
            assert body == package_file("index.html")  # the same fixed file everywhere
            csp = headers["content-security-policy"]
            assert csp.startswith("default-src 'self';")
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "script-src 'self';" in csp and "style-src 'self';" in csp
            connect = re.search(r"connect-src ([^;]*);", csp)
            assert connect is not None
            assert set(connect.group(1).split()) == {
                "'self'",
                *(f"{scheme}://{a}" for a in apis for scheme in ("http", "https")),
            }
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
            for secret in (nodes[0].cluster_id, *(n.storage.incarnation for n in nodes)):
                assert secret.encode() not in body
        for name, media_type in FILES.items():
            status, headers, body = await raw(apis[1], "GET", f"/ui/{name}")
            assert status == 200, name
            assert headers["content-type"] == media_type
            assert body == package_file(name)
            assert "content-security-policy" in headers
        for path in ("/ui/nope.js", "/ui/..%2fdashboard.py", "/ui/../api/dashboard.py",
                     "/ui/%2e%2e/server.py", "/ui/ui/app.js", "/ui/.env"):  # fmt: skip
            status, _, body = await raw(apis[0], "GET", path)
            assert status == 404, (path, body)
        # Read-only: nothing but GET and HEAD.
        status, _, _ = await raw(apis[0], "POST", "/ui/app.js")
        assert status == 405
        status, headers, body = await raw(apis[0], "HEAD", "/ui/app.js")
        assert status == 200 and body == b""


async def test_cors_only_for_member_origins_and_only_for_reading(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        a, b = (cluster.api(n) for n in cluster.running()[:2])
        member = f"http://{b}"
        # A page loaded from member b reads member a, with a token header.
        status, headers, _ = await raw(
            a,
            "OPTIONS",
            "/v1/workloads",
            {
                "Origin": member,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert status == 204
        assert headers["access-control-allow-origin"] == member
        assert headers["access-control-allow-headers"] == "Authorization"
        assert "access-control-allow-credentials" not in headers
        status, headers, _ = await raw(a, "GET", "/v1/node/status", {"Origin": member})
        assert status == 200 and headers["access-control-allow-origin"] == member
        assert "X-Univrs-Applied-Index" in headers["access-control-expose-headers"]
        # Writing through a browser is not granted, even to a member's page.
        for method, extra in (("POST", ""), ("DELETE", ""), ("GET", "content-type")):
            status, headers, _ = await raw(
                a,
                "OPTIONS",
                "/v1/workloads",
                {
                    "Origin": member,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": extra,
                },
            )
            assert status == 403, method
            assert "access-control-allow-origin" not in headers
        # Another origin gets no CORS header at all: its page cannot read the answers.
        for origin in ("http://evil.example", f"http://{a}.evil.example", "null"):
            status, headers, _ = await raw(
                a,
                "OPTIONS",
                "/v1/workloads",
                {"Origin": origin, "Access-Control-Request-Method": "GET"},
            )
            assert "access-control-allow-origin" not in headers, origin
            status, headers, _ = await raw(a, "GET", "/v1/node/status", {"Origin": origin})
            assert status == 200 and "access-control-allow-origin" not in headers, origin


async def test_node_status_reports_last_contact_of_peers(tmp_path: pathlib.Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        leader = await cluster.wait_leader()
        doc = (await cluster.http(leader, "GET", "/v1/node/status")).body
        assert len(doc["peers"]) == 2
        for peer in doc["peers"]:
            assert peer["last_contact_s"] is not None and 0 <= peer["last_contact_s"] < 30
