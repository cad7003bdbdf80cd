"""Errors raised by the web view and its API (``predstream serve``).

Every error says what to do::

    WebError                     root of this package
     ├── WebExtraMissingError    fastapi, uvicorn or jinja2 is not installed:
     │                           pip install 'predstream[web]'
     ├── NotFoundError           the job, prompt or prediction set asked for is not stored (404)
     └── BadRequestError         a parameter a query cannot take: a cursor no page returned,
                                 a search that is not a number where one is needed (400)
"""

from __future__ import annotations

__all__ = ["WebError", "WebExtraMissingError", "NotFoundError", "BadRequestError"]


class WebError(Exception):
    """Root of every error raised by ``predstream.web``."""


class WebExtraMissingError(WebError, ImportError):
    """The web view's libraries are missing; the message names the extra to install."""


class NotFoundError(WebError):
    """What was asked for is not in the database; the message names it."""


class BadRequestError(WebError, ValueError):
    """A parameter a query cannot take; the message says what to pass instead."""
