"""Shared pieces of the state CLI: the client context, common options, output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from univrs.cli import _api_option
from univrs.client.sync import SyncClient
from univrs.errors import InvalidArgument, MalformedRequest, Unavailable, UnivrsError

EXIT_ANSWERED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
PAGE = 1000


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def client_for(api: str, timeout: float) -> Iterator[SyncClient]:
    try:
        client = SyncClient(api=api, timeout=timeout)
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
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)
    f = click.option(
        "--timeout", default=10.0, show_default=True, help="Seconds before giving up."
    )(f)
    return _api_option(f)  # type: ignore[no-any-return]


def local_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--local",
        is_flag=True,
        help="Read this node's replica (fast, may be stale) instead of a linearizable read.",
    )(f)


def consistency(local: bool) -> str | None:
    return "local" if local else None


def pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            fail(f"{what} {value!r} must be KEY=VALUE", EXIT_USAGE)
        out[key] = text
    return out


def emit(as_json: bool, doc: Any, human: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        click.echo(human(doc))


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def all_pages(fetch: Callable[..., Any], limit: int | None, **args: Any) -> dict[str, Any]:
    """One page when ``limit`` is given, else every page."""
    if limit is not None:
        page: dict[str, Any] = fetch(limit=limit, **args)
        return page
    items: list[Any] = []
    after = args.pop("after", None)
    while True:
        page = fetch(limit=PAGE, after=after, **args)
        items.extend(page["items"])
        after = page["next"]
        if after is None:
            return {**page, "items": items, "next": None}


def next_note(page: dict[str, Any]) -> str:
    return f"\n(more: --after {page['next']})" if page.get("next") else ""


def deleted(what: str) -> Callable[[Any], str]:
    return lambda d: f"deleted {what} {d['id']} (at index {d['version']})"
