"""Backing off while something the consumer depends on is unavailable.

* :class:`Backoff` — the waits between tries: ``first_s``, then twice as long each time,
  at most ``max_s``.
* :class:`Outage` — the worker's state while paused: what is down, since when, and when to
  try again (:mod:`predstream.consumer.worker`).
* :func:`retry_while_unavailable` — a bounded retry of one database write, for the
  commands that stop with a message rather than wait forever (replay, backfill).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from predstream.schemas.errors import RegistryUnavailableError

from .errors import DatabaseUnavailableError, DeadLetterUnavailableError, RetriableError

__all__ = ["RETRIABLE", "Backoff", "Outage", "what_is_down", "retry_while_unavailable"]

#: Errors that mean "retry the same work later" (an outage, not the event's fault).
RETRIABLE = (RetriableError, RegistryUnavailableError)

_T = TypeVar("_T")


@dataclass
class Backoff:
    """Waits that double from ``first_s`` up to ``max_s``: :meth:`next_delay` gives the next one."""

    first_s: float
    max_s: float = math.inf
    #: the wait :meth:`next_delay` gave last (0 before the first)
    delay: float = 0.0

    def next_delay(self) -> float:
        self.delay = self.first_s if self.delay <= 0 else min(self.delay * 2, self.max_s)
        return self.delay


@dataclass
class Outage:
    """One dependency down: ``what`` (for log lines), since when, when to try again."""

    what: str
    since: float
    backoff: Backoff
    next_try: float = field(default=0.0)

    @classmethod
    def begin(cls, what: str, now: float, first_s: float, max_s: float) -> Outage:
        outage = cls(what, now, Backoff(first_s, max_s))
        outage.failed_again(now)
        return outage

    def failed_again(self, now: float) -> float:
        """One more failed try at ``now``: the next is a longer wait away; returns that wait."""
        delay = self.backoff.next_delay()
        self.next_try = now + delay
        return delay

    def due(self, now: float) -> bool:
        return now >= self.next_try


def what_is_down(exc: BaseException) -> str:
    """``"database"``, ``"dead-letter topic"``, ``"schema registry"`` or ``"dependency"``."""
    if isinstance(exc, DatabaseUnavailableError):
        return "database"
    if isinstance(exc, DeadLetterUnavailableError):
        return "dead-letter topic"
    if isinstance(exc, RegistryUnavailableError):
        return "schema registry"
    return "dependency"


def retry_while_unavailable(
    write: Callable[[], _T],
    give_up: Callable[[DatabaseUnavailableError], Exception],
    log: logging.Logger,
    *,
    attempts: int = 4,
    first_s: float = 1.0,
) -> _T:
    """``write()``, tried ``attempts`` times while the database is unavailable, waiting
    1, 2, 4 ... s between tries (one warning on ``log`` each); then ``give_up(error)`` is
    raised."""
    backoff = Backoff(first_s)
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except DatabaseUnavailableError as exc:
            if attempt == attempts:
                raise give_up(exc) from None
            delay = backoff.next_delay()
            log.warning("database unavailable (%s); retrying in %.0f s", exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
