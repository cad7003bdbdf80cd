"""The HTML pages: runs, compare, prompt, search, prediction sets."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

__all__ = ["router", "error_page"]

router = APIRouter(include_in_schema=False)


def error_page(request: Request, status: int, message: str) -> Response:
    from html import escape

    return HTMLResponse(f"<!doctype html><title>{status}</title><p>{escape(message)}</p>", status_code=status)
