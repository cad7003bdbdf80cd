"""The one way tests wait: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_for"]


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition", every: float = 0.1) -> Any:
    """Call ``condition`` every ``every`` seconds until it returns something truthy, and
    return that. An exception it raises counts as "not yet" (e.g. a database restarting);
    after ``timeout`` seconds, fail naming ``what`` and the last answer or exception."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except Exception as exc:  # noqa: BLE001 - shown in the failure if it never stops
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(every)
