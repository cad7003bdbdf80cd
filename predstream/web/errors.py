"""Errors raised by the web view and its API (``predstream serve``).

Every error says what to do::

    WebError                     root of this package
     ├── WebExtraMissingError    fastapi, uvicorn or jinja2 is not installed:
     │                           pip install 'predstream[web]'
     └── NotFoundError           the job, prompt or prediction set asked for is not stored
"""

from __future__ import annotations

__all__ = ["WebError", "WebExtraMissingError", "NotFoundError"]


class WebError(Exception):
    """Root of every error raised by ``predstream.web``."""


class WebExtraMissingError(WebError, ImportError):
    """The web view's libraries are missing; the message names the extra to install."""


class NotFoundError(WebError):
    """What was asked for is not in the database; the message names it."""
