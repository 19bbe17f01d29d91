"""Serving the local API: hypercorn's trio worker on ``127.0.0.1:<port>``, loopback only."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from ..contract import API_HOST

log = logging.getLogger("swapmeet.node.http")


async def serve_api(
    app: Any,
    *,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until cancelled.

    ``port=0`` binds a free port; the bound port is reported with
    ``task_status.started(port)`` (use ``await nursery.start(...)``). Cancelling
    the enclosing scope stops the server at once and closes the listening
    socket; when ``shutdown_trigger`` returns, the server shuts down gracefully
    instead (in-flight requests get a few seconds) and this returns.
    Raises :class:`OSError` when the port cannot be bound.
    """
    created: list[Any] = []

    class _TrackingConfig(Config):
        # hypercorn never closes its listening sockets, it leaves them to the garbage collector (late, if a
        # traceback still holds them): keep them, to close them ourselves so the port is free when we return
        def create_sockets(self) -> Any:
            sockets = super().create_sockets()
            created.append(sockets)
            return sockets

    config = _TrackingConfig()
    config.bind = [f"{API_HOST}:{port}"]  # loopback only, never 0.0.0.0: the token is the only lock
    config.accesslog = None
    server_log = logging.getLogger("swapmeet.node.http.server")
    if server_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
        # hypercorn's own info lines ("Running on ... (CTRL + C to quit)") are noise unless debugging
        server_log.setLevel(logging.WARNING)
    config.errorlog = server_log
    config.include_server_header = False
    config.graceful_timeout = 3.0
    config.h11_max_incomplete_size = 16 * 1024
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown_trigger))
            bound = created[0].insecure_sockets[0].getsockname()[1]
            log.info("local API on http://%s:%d", API_HOST, bound)
            task_status.started(bound)
    finally:
        for sockets in created:
            for sock in (*sockets.insecure_sockets, *sockets.secure_sockets):
                with contextlib.suppress(OSError):
                    sock.close()
