"""What every command group of the CLI shares: the API option, the REST helper of the cluster
commands, the client of the state commands, output helpers and exit codes.

Every command sends the API token in ``$UNIVRS_TOKEN`` (its secret; never a flag, which would
show in ``ps`` and shell history) when the variable is set.
TLS: every command that talks to a node takes ``--ca``, ``--cert`` and ``--key`` (or
``$UNIVRS_CA_CERT``, ``$UNIVRS_CLIENT_CERT``, ``$UNIVRS_CLIENT_KEY``): the cluster CA that
signed the nodes' certificates, and this client's certificate and key (``univrs certs
create-client``). With a CA every request is HTTPS (and the fast protocol TLS); an
``https://`` API address asks for TLS as well.

Exit codes (the table in docs/cli.md): 0 success; 1 the cluster answered with an error or
refused (not found, conflict, a refused membership change), or ``cluster status`` found a
member unreachable; 2 bad usage or an invalid argument; 3 unavailable: no node answered at
``--api``, or the cluster has no leader.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from univrs.client.client import split_url, ssl_for
from univrs.client.sync import SyncClient
from univrs.errors import (
    InvalidArgument,
    MalformedRequest,
    PayloadTooLarge,
    Unavailable,
    UnivrsError,
)
from univrs.net.address import join_host_port, split_host_port

DEFAULT_API = "127.0.0.1:8000"
EXIT_ANSWERED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
PAGE = 1000
TOKEN_ENV = "UNIVRS_TOKEN"


def env_token() -> str | None:
    """The API token secret of ``$UNIVRS_TOKEN`` (None: unset or empty)."""
    return os.environ.get(TOKEN_ENV) or None


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer $UNIVRS_TOKEN`` when the variable is set."""
    token = env_token()
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def fail(message: str, code: int = EXIT_ANSWERED) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


_TLS_OPTIONS = (
    ("--ca", "tls_ca", "UNIVRS_CA_CERT", "The cluster CA's certificate (turns TLS on)."),
    ("--cert", "tls_cert", "UNIVRS_CLIENT_CERT", "This client's certificate."),
    ("--key", "tls_key", "UNIVRS_CLIENT_KEY", "This client's private key."),
)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"univrs.{param.name}"] = value
    return value


def tls_options(f: Any) -> Any:
    """``--ca/--cert/--key`` (see the module docstring); read back with ``cli_ssl()``."""
    for flag, name, env, text in reversed(_TLS_OPTIONS):
        f = click.option(
            flag,
            name,
            envvar=env,
            expose_value=False,
            callback=_remember,
            type=click.Path(dir_okay=False),
            help=f"{text} [${env}]",
        )(f)
    return f


def cli_ssl(secure: bool = False) -> ssl.SSLContext | None:
    """The TLS context the options of the running command ask for (None: plaintext)."""
    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    ca, cert, key = (meta.get(f"univrs.{name}") for _f, name, _e, _t in _TLS_OPTIONS)
    if (cert is None) != (key is None):
        fail("give both --cert and --key (or $UNIVRS_CLIENT_CERT and $UNIVRS_CLIENT_KEY)", 2)
    if ca is None:
        if cert is not None:
            fail("--cert needs --ca (the cluster CA's certificate, $UNIVRS_CA_CERT)", 2)
        return ssl_for(secure, None)
    from univrs.net.tls import client_context

    try:
        return client_context(ca, cert, key)
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot load the TLS files: {exc}", 2)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_endpoint(text: str) -> str:
    """One API endpoint, normalised: ``host:port`` (from ``host:port``, ``[v6]:port`` or
    ``http://host:port``) or ``https://host:port``; a trailing ``/`` is fine, a URL without a
    port gets its scheme's. Raises ValueError saying what is wrong."""
    text = text.strip()
    if "://" in text:
        url = urllib.parse.urlsplit(text)
        if url.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"{text!r}: only http:// and https:// URLs are endpoints")
        if url.path not in ("", "/") or url.query or url.fragment or url.username:
            raise ValueError(f"{text!r}: an endpoint URL is scheme://host:port, nothing more")
        if not url.hostname:
            raise ValueError(f"{text!r} has no host")
        try:
            port = url.port or _DEFAULT_PORTS[url.scheme]
        except ValueError as exc:  # urllib's "Port out of range" and friends
            raise ValueError(f"{text!r}: {exc}") from None
        hostport = join_host_port(url.hostname, port)
        return f"https://{hostport}" if url.scheme == "https" else hostport
    host, port = split_host_port(text)
    return join_host_port(host, port)


def parse_endpoints(text: str) -> list[str]:
    """A comma-separated list of endpoints (see ``parse_endpoint``), in order, no duplicates."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise ValueError("no endpoint given")
    return list(dict.fromkeys(parse_endpoint(p) for p in parts))


def _check_api(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return ",".join(parse_endpoints(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def api_option(f: Any) -> Any:
    """``--api``: any node's API endpoint, or several comma-separated (default $UNIVRS_API),
    normalised by ``parse_endpoints`` (usage error, exit 2, on a malformed one); with the TLS
    options."""
    f = tls_options(f)
    return click.option(
        "--api",
        "api",
        default=lambda: os.environ.get("UNIVRS_API", DEFAULT_API),
        show_default=f"$UNIVRS_API or {DEFAULT_API}",
        callback=_check_api,
        help="Any node's API: host:port, [v6]:port, http://host:port or https://host:port; "
        "several comma-separated are tried in order.",
    )(f)


def any_https(api: str) -> bool:
    """Whether an endpoint of the list ``api`` asks for TLS."""
    return any(split_url(a)[1] for a in api.split(","))


def api_url(api: str) -> tuple[str, ssl.SSLContext | None]:
    """The base URL of ``api`` and the TLS context to reach it with."""
    hostport, secure = split_url(api)
    context = cli_ssl(secure)
    return f"{'https' if context is not None else 'http'}://{hostport}", context


def http_json(
    api: str, method: str, path: str, body: Any = None, timeout: float = 60.0
) -> tuple[int, Any]:
    """(status, decoded body) of one request to the first node of ``api`` (a comma list) that
    answers; exits with EXIT_UNAVAILABLE when none does. A write moves on to the next endpoint
    only when its connection was refused (never after the request may have arrived)."""
    data = None if body is None else json.dumps(body).encode()
    problems = []
    for addr in api.split(","):
        base, context = api_url(addr)
        req = urllib.request.Request(
            f"{base}{path}",
            data=data,
            method=method,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                **auth_headers(),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.load(exc)
            except ValueError:
                return exc.code, None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            problems.append(f"{addr} ({reason})")
            if method != "GET" and not isinstance(reason, ConnectionRefusedError | socket.gaierror):
                # The request may have arrived: trying another node could do it twice.
                fail(f"no answer from {addr} ({reason}); the outcome is unknown", EXIT_UNAVAILABLE)
    fail(
        f"cannot reach the univrs API at {', '.join(problems)}; is a node running there?",
        EXIT_UNAVAILABLE,
    )


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain left-aligned text table."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


# ---------------------------------------------------------------- the state commands


@contextmanager
def client_for(api: str, timeout: float, *, stay: bool = False) -> Iterator[SyncClient]:
    """A client of the cluster at ``api``; an error it raises ends the command (one line on
    stderr, ``error: <code>: <message>``, with the exit code of its kind). ``stay``: talk to
    the first ``api`` node that answers, not the leader (``--local`` reads its replica)."""
    try:
        client = SyncClient(
            api=api,
            timeout=timeout,
            ssl_context=cli_ssl(any_https(api)),
            fail_fast=True,
            stay=stay,
            token=env_token(),
        )
    except UnivrsError as exc:
        fail(f"{exc.code}: {exc.message}", EXIT_UNAVAILABLE)
    try:
        yield client
    except UnivrsError as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        code = EXIT_UNAVAILABLE if isinstance(exc, Unavailable) else EXIT_ANSWERED
        if isinstance(exc, InvalidArgument | MalformedRequest):
            code = EXIT_USAGE
        fail(f"{exc.code}: {exc.message}{where}", code)
    finally:
        client.close()


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--api``, ``--timeout`` and ``--json``: the options of every state command."""
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)
    f = click.option(
        "--timeout", default=10.0, show_default=True, help="Seconds before giving up."
    )(f)
    return api_option(f)  # type: ignore[no-any-return]


def local_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--local``: a stale-allowed read of the node's own replica."""
    return click.option(
        "--local",
        is_flag=True,
        help="Read this node's replica (fast, may be stale) instead of a linearizable read.",
    )(f)


def consistency(local: bool) -> str | None:
    return "local" if local else None


def pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    """``KEY=VALUE`` options as a map (exit 2 on a malformed one)."""
    out = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            fail(f"{what} {value!r} must be KEY=VALUE", EXIT_USAGE)
        out[key] = text
    return out


def emit(as_json: bool, doc: Any, human: Callable[[Any], str]) -> None:
    """Print ``doc``: as JSON for scripts, else as ``human`` renders it."""
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        click.echo(human(doc))


def all_pages(fetch: Callable[[dict[str, Any]], Any], args: dict[str, Any]) -> dict[str, Any]:
    """One page when ``args`` has a ``limit``, else every page from ``after`` on. Pages are
    read at different revisions: the result's ``revision`` is the first page's, so a watch
    from it + 1 misses nothing (it may show changes later pages already had)."""
    if "limit" in args:
        page: dict[str, Any] = fetch(args)
        return page
    items: list[Any] = []
    after = args.get("after")
    first: Any = None
    size = PAGE
    while True:
        try:
            page = fetch({**args, "limit": size, **({} if after is None else {"after": after})})
        except PayloadTooLarge:
            # A page of big objects (a workload may hold about 1 MB) over the fast protocol's
            # frame (s15-review B1): ask for half as many, down to one.
            if size == 1:
                raise
            size //= 2
            continue
        first = page.get("revision") if first is None else first
        items.extend(page["items"])
        after = page["next"]
        if after is None:
            return {**page, "items": items, "next": None, "revision": first}
