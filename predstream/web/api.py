"""The JSON API under ``/api/v1`` (read side): the same data as the pages."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(tags=["read"])
