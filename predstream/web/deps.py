"""What a request handler gets injected: a pooled read-only connection, the settings.

The pool lives on ``app.state.pool`` (made by :func:`predstream.web.app.create_app`, opened
by its lifespan or by the first request). Each connection is in autocommit mode with
``default_transaction_read_only`` on and a ``statement_timeout``, so even a role with more
grants than ``predstream_reader`` cannot write through the read side.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from .settings import ServeSettings

__all__ = ["Conn", "Settings", "get_connection", "get_settings", "make_pool"]


def make_pool(settings: ServeSettings) -> ConnectionPool[psycopg.Connection[Any]]:
    """A closed pool of read-only connections to ``settings.database_url`` (open it before use)."""
    timeout = settings.web_statement_timeout_ms

    def _configure(conn: psycopg.Connection[Any]) -> None:
        conn.autocommit = True
        conn.execute("SET default_transaction_read_only = on")
        conn.execute(f"SET statement_timeout = {int(timeout)}")

    return ConnectionPool(
        settings.require_database_url(),
        min_size=1,
        max_size=settings.web_pool_size,
        open=False,
        configure=_configure,
        timeout=5.0,
        name="predstream-web",
    )


def get_settings(request: Request) -> ServeSettings:
    settings: ServeSettings = request.app.state.settings
    return settings


def get_connection(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """One pooled connection for the request, returned to the pool afterwards."""
    pool: ConnectionPool[psycopg.Connection[Any]] = request.app.state.pool
    if pool.closed:  # no lifespan ran (e.g. a bare ASGI transport): open on first use
        pool.open()
    with pool.connection() as conn:
        yield conn


Conn = Annotated[psycopg.Connection[Any], Depends(get_connection)]
Settings = Annotated[ServeSettings, Depends(get_settings)]
