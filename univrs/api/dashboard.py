"""The web dashboard at ``/ui``: read-only static files, and CORS for the cluster's own pages.

Theory of operation. ``/ui/`` serves a fixed set of files shipped in the package
(``univrs/api/ui/``: HTML, one stylesheet, ES modules); nothing is generated from a request
and nothing secret is in them. The page then reads everything through the authenticated API,
with the token the operator typed (``Authorization: Bearer``, kept in the browser's
sessionStorage, or localStorage if asked; never in a URL). To keep working while the node it was
loaded from dies, the page talks to every member's API: those are other origins (another port
or host), so

* the page's ``Content-Security-Policy`` is ``default-src 'self'`` plus ``connect-src`` naming
  every member's API origin as this node knows them when it serves the page (no inline script,
  no inline style, no frames, no plugins, no form targets);
* ``CorsForMembers`` (an ASGI middleware around the whole app) lets a page from a member's API
  origin read ``GET`` answers from this node: it answers the preflight (``OPTIONS`` with
  ``Access-Control-Request-Method: GET``; ``Authorization`` is the one request header allowed)
  and adds ``Access-Control-Allow-Origin: <that origin>`` to answers. Any other origin gets no
  CORS header, so a page elsewhere cannot read the API through a browser; a preflight for any
  other method is not granted, so the dashboard's origins cannot write through a browser either.
  No cookies are used and ``Access-Control-Allow-Credentials`` is never sent: there is no
  ambient credential a hostile page could ride on.

Who may use it: anyone who reaches the API listener can fetch the static files (they are the
same for everyone); what the page then shows is what its token may read. A hostile client gets
the same fixed files, a 404 for any other name under ``/ui/`` (no path is ever joined to a file
system path), and nothing else.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from univrs.api.endpoints import member_endpoints
from univrs.api.rest import error_response
from univrs.errors import NotFound

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

# The files of the page, by name under /ui/, with their media types: a fixed table, so a
# request can never name anything else.
FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "metrics.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

EXPOSED_HEADERS = (
    "X-Univrs-Node, X-Univrs-Consistency, X-Univrs-Applied-Index, X-Univrs-Commit-Index, "
    "X-Univrs-Behind, X-Univrs-Leader-Contact-Ms, Retry-After"
)


@functools.cache
def _file(name: str) -> bytes:
    return importlib.resources.files("univrs.api").joinpath("ui", name).read_bytes()


def member_origins(node: NodeHandle) -> list[str]:
    """The origins of every member's API as this node knows them (http and https: the page
    uses the scheme it was loaded with)."""
    out: list[str] = []
    for addrs in member_endpoints(node).values():
        api = addrs.get("api")
        if api:
            out += [f"http://{api}", f"https://{api}"]
    return sorted(set(out))


def content_security_policy(node: NodeHandle) -> str:
    """The page's CSP: its own origin only, plus reading from the members' APIs."""
    connect = " ".join(["'self'", *member_origins(node)])
    return (
        "default-src 'self'; "
        f"connect-src {connect}; "
        "img-src 'self'; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    )


def _node(request: Request) -> NodeHandle:
    node: NodeHandle = request.app.state.node
    return node


async def ui_root(request: Request) -> Response:
    """``/ui`` -> ``/ui/`` (relative URLs in the page resolve under it)."""
    return RedirectResponse("/ui/", status_code=308)


async def ui_file(request: Request) -> Response:
    """One of the page's fixed files (``/ui/`` is ``index.html``)."""
    name = request.path_params.get("name") or "index.html"
    media_type = FILES.get(name)
    if media_type is None:
        return error_response(NotFound(f"no such file: /ui/{name}"))
    headers = {
        "Content-Security-Policy": content_security_policy(_node(request)),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return Response(_file(name), media_type=media_type, headers=headers)


def routes() -> list[Route]:
    """The dashboard's routes (GET and HEAD only)."""
    return [
        Route("/ui", ui_root, methods=["GET", "HEAD"]),
        Route("/ui/", ui_file, methods=["GET", "HEAD"]),
        Route("/ui/{name}", ui_file, methods=["GET", "HEAD"]),
    ]


class CorsForMembers:
    """ASGI middleware: CORS for ``GET`` from the members' API origins (module docstring)."""

    def __init__(self, app: ASGIApp, node: NodeHandle) -> None:
        self.app = app
        self.node = node

    def _allowed(self, scope: Scope) -> str | None:
        origin: str | None = None
        for key, value in scope.get("headers", ()):
            if key == b"origin":
                origin = bytes(value).decode("latin-1")
                break
        if origin is None or origin not in member_origins(self.node):
            return None
        return origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = self._allowed(scope)
        if origin is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await self._preflight(origin, headers, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
                    (b"vary", b"Origin"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, origin: str, headers: dict[bytes, bytes], send: Send) -> None:
        method = headers[b"access-control-request-method"].decode("latin-1").upper()
        asked = headers.get(b"access-control-request-headers", b"").decode("latin-1")
        wanted = {h.strip().lower() for h in asked.split(",") if h.strip()}
        granted = method in ("GET", "HEAD") and wanted <= {"authorization"}
        out = [(b"vary", b"Origin"), (b"content-length", b"0")]
        if granted:
            out += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", b"GET, HEAD"),
                (b"access-control-allow-headers", b"Authorization"),
                (b"access-control-max-age", b"600"),
            ]
        await send({"type": "http.response.start", "status": 204 if granted else 403,
                    "headers": out})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})
