"""A blocking facade over the async client, for scripts and the CLI.

``SyncClient`` runs a Trio event loop with one ``Client`` in a background thread; each method
call is sent to that loop (``trio.from_thread.run``) and blocks until it returns. Every method
of ``univrs.client.client.Client`` is available with the same arguments, minus ``await``.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import threading
from collections.abc import Callable
from typing import Any

import trio

from univrs.client.client import DEFAULT_TIMEOUT, Client, open_client


class SyncClient:
    """A blocking univrs client (see the module docstring). Use it as a context manager or
    call ``close()``."""

    def __init__(
        self,
        endpoints: list[str] | str | None = None,
        *,
        api: list[str] | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        fail_fast: bool = False,
        stay: bool = False,
        token: str | None = None,
        answer: str = "full",
    ) -> None:
        self._ready = threading.Event()
        self._client: Client | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main,
            args=(endpoints, api, timeout, ssl_context, fail_fast, stay, token, answer),
            name="univrs-client",
            daemon=True,
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _main(
        self,
        endpoints: Any,
        api: Any,
        timeout: float,
        ssl_context: ssl.SSLContext | None,
        fail_fast: bool,
        stay: bool,
        token: str | None,
        answer: str,
    ) -> None:
        async def run() -> None:
            async with open_client(
                endpoints,
                api=api,
                timeout=timeout,
                ssl_context=ssl_context,
                fail_fast=fail_fast,
                stay=stay,
                token=token,
                answer=answer,
            ) as client:
                self._client = client
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()

        try:
            trio.run(run)
        except BaseException as exc:
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            self._error = exc
        finally:
            self._ready.set()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        client = self.__dict__.get("_client")
        method = getattr(client, name, None) if client is not None else None
        if method is None or not callable(method):
            raise AttributeError(name)

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            if self._token is None or not self._thread.is_alive():
                raise RuntimeError("the client is closed")
            return trio.from_thread.run(
                functools.partial(method, *args, **kwargs), trio_token=self._token
            )

        return call

    def close(self) -> None:
        """Close the client (its sessions and connections) and stop its thread."""
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
