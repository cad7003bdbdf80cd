"""The ASGI app: the JSON API under ``/api/v1``, the pages, the static files.

:func:`create_app` is the one place where routers are put together. State lives on
``app.state``: ``settings`` (the :class:`ServeSettings`) and ``pool`` (a psycopg
``ConnectionPool`` of read-only connections, see :mod:`.deps`), opened by the lifespan.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from psycopg_pool import PoolTimeout

from . import api, pages
from .deps import make_pool
from .errors import BadRequestError, NotFoundError
from .settings import ServeSettings

__all__ = ["create_app", "API_PREFIX"]

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_STATIC = Path(__file__).parent / "static"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = app.state.pool
    pool.open(wait=False)
    try:
        yield
    finally:
        pool.close()


def create_app(settings: ServeSettings) -> FastAPI:
    """The web view and API for ``settings`` (its database is read when requests come)."""
    app = FastAPI(
        title="predstream",
        version=_version(),
        summary="Training-eval predictions, run by run and step by step (read-only, plus one write endpoint).",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # Swagger UI loads its scripts from a CDN; everything here works offline
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.pool = make_pool(settings)
    app.include_router(api.router, prefix=API_PREFIX)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")
    _add_error_handlers(app)
    _include_optional_routers(app, settings)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("predstream")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "0+unknown"


def _include_optional_routers(app: FastAPI, settings: ServeSettings) -> None:
    """Routers beyond the read side: the write endpoint ``POST /api/v1/predictions``
    (:mod:`.ingest`: its bearer token ``settings.web_token``, its publisher opened and closed
    by the lifespan, its record's schema in the OpenAPI document)."""
    from . import ingest

    ingest.install(app, settings, prefix=API_PREFIX)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> Response:
        if request.url.path.startswith(API_PREFIX):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return pages.error_page(request, 404, str(exc))

    @app.exception_handler(BadRequestError)
    async def _bad_request(request: Request, exc: BadRequestError) -> Response:
        if request.url.path.startswith(API_PREFIX):
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return pages.error_page(request, 400, str(exc))

    @app.exception_handler(psycopg.DataError)
    async def _unstorable_parameter(request: Request, exc: psycopg.DataError) -> Response:
        # a parameter Postgres cannot take (a NUL character, a number out of its range): the
        # request's fault, not the server's (found by tests/test_web_schemathesis.py)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = f"a parameter the database cannot take ({first}): leave it out or change it"
        if request.url.path.startswith(API_PREFIX):
            return JSONResponse({"detail": message}, status_code=400)
        return pages.error_page(request, 400, message)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(request: Request, exc: Exception) -> Response:
        _log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        message = "the database does not answer (or the query took too long); try again shortly"
        if request.url.path.startswith(API_PREFIX):
            return JSONResponse({"detail": message}, status_code=503)
        return pages.error_page(request, 503, message)
