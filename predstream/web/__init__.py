"""The web view and JSON API over the predictions table: ``predstream serve``.

Pages (runs, compare, prompt, search, prediction sets) and ``/api/v1`` (its OpenAPI
document at ``/api/v1/openapi.json``) read ``training_predictions`` and the views of
``migrations/0005`` through a read-only role (``docs/reader_role.sql``); every query is in
:mod:`.queries`. Model output is untrusted text: templates autoescape it and the charts
are drawn on the server as SVG from numbers only. Everything is served from the package:
no CDN, no build step.

:func:`create_app` builds the ASGI app for given :class:`ServeSettings`; :func:`serve` runs
it with uvicorn until interrupted; :func:`start_server` runs it in a background thread (tests,
benchmarks, ``predstream demo --serve``).

Needs the ``web`` extra (fastapi, uvicorn, jinja2, psycopg-pool):
``pip install 'predstream[web]'``.
"""

from __future__ import annotations

from .errors import NotFoundError, WebError, WebExtraMissingError

try:
    import fastapi  # noqa: F401
    import jinja2  # noqa: F401
    import psycopg_pool  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised by tests/test_web_settings.py in a subprocess
    raise WebExtraMissingError(
        f"the web view needs the web extra: pip install 'predstream[web]' (missing module {_exc.name!r})"
    ) from None

from .app import create_app
from .server import RunningServer, serve, start_server
from .settings import ServeSettings

__all__ = [
    "create_app",
    "ServeSettings",
    "serve",
    "start_server",
    "RunningServer",
    "WebError",
    "WebExtraMissingError",
    "NotFoundError",
]
