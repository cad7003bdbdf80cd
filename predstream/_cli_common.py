"""What every CLI module shares: logging set-up and turning errors into one line.

The options that mirror settings, and how a command builds its settings, are in
:mod:`predstream._cli_options`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

P = ParamSpec("P")
R = TypeVar("R")

_log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        for key in ("partition", "offset", "batch", "event_id", "worker"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        return json.dumps(out, default=str)


def check_log_level(level: str) -> str:
    """``level`` in upper case, or exit 2 with one line naming the levels."""
    if level.upper() not in LOG_LEVELS:
        raise fail(f"unknown log level {level!r} (--log-level / PREDSTREAM_LOG_LEVEL): use {', '.join(LOG_LEVELS)}")
    return level.upper()


_TRUE, _FALSE = ("1", "true", "yes", "on", "t", "y"), ("", "0", "false", "no", "off", "f", "n")


def env_flag(name: str) -> bool:
    """A yes/no environment variable (as pydantic reads one), or exit 2 with one line."""
    value = os.environ.get(name, "")
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise fail(f"bad setting {name}: {value!r} is not a yes/no value; use true or false")


def configure_logging(level: str = "INFO", json_logs: bool = False) -> None:
    """Install the one log handler of the process (library code only creates loggers)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("predstream").setLevel(level.upper())


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


_DB_HINTS = {
    "42P01": "; this database has no predstream tables: run `predstream migrate` or give the right --database-url",
    "42703": "; the table lacks a column: run `predstream migrate`",
    "3D000": "; create the database or fix --database-url / PREDSTREAM_DATABASE_URL",
    "28P01": "; check the user and password in --database-url / PREDSTREAM_DATABASE_URL",
    "42501": "; the user lacks a privilege on the table",
}


def _one_line(exc: BaseException, urls: list[str | None]) -> str:
    from predstream.schemas import redact_url

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if type(exc).__module__.startswith("psycopg"):
        text = "database: " + text + _DB_HINTS.get(getattr(exc, "sqlstate", None) or "", "")
    return redact_url(text, urls)


def one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the packages' own errors (and bad settings) into one line on stderr, exit 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from predstream.consumer import ConsumerError
        from predstream.local import LocalStackError
        from predstream.producer import ProducerError
        from predstream.schemas import SchemaError

        known: tuple[type[BaseException], ...] = (SchemaError, ConsumerError, ProducerError, LocalStackError)
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            # psycopg's errors, and the web view's (its extra may not be installed), when the
            # command loaded them
            for module, name in (("psycopg", "Error"), ("predstream.web.errors", "WebError")):
                if module in sys.modules:
                    known += (getattr(sys.modules[module], name),)
            if not isinstance(exc, known):
                raise
            _log.debug("command failed", exc_info=True)
            given = kwargs.get("database_url")
            urls = [given if isinstance(given, str) else None, os.environ.get("PREDSTREAM_DATABASE_URL")]
            raise fail(_one_line(exc, urls)) from None

    return wrapper
