"""The consumer side's settings, read from ``PREDSTREAM_*`` and validated at start-up."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from predstream.schemas.errors import ConfigError
from predstream.schemas.settings import StreamSettings

__all__ = ["ConsumerSettings", "redact_url"]


class ConsumerSettings(StreamSettings):
    """Everything a consumer worker, ``migrate``, ``replay`` and ``backfill`` need."""

    # a validation error must not echo the database URL (its password) back
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    #: ``postgresql://user:password@host:port/db``; the CLI falls back to the running local
    #: stack's Postgres.
    database_url: str | None = None
    #: Kafka consumer group of the workers.
    group_id: str = Field(default="predstream-consumer", min_length=1, max_length=255)
    #: Upsert once this many events are buffered (also: events per transaction of
    #: ``replay`` and ``backfill``) ...
    batch_size: int = Field(default=2000, ge=1, le=100_000)
    #: ... or once the oldest buffered event has waited this long.
    batch_max_wait_ms: int = Field(default=200, ge=1, le=60_000)
    #: Prometheus metrics and /healthz on this port (0 = off).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: On SIGTERM/SIGINT, finish and commit the batch in flight within this many seconds.
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    #: Longest pause between retries while Postgres is unreachable.
    db_max_backoff_s: float = Field(default=10.0, gt=0)
    #: librdkafka session timeout; short values make rebalances after a crash quick.
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    #: A worker still without an assignment this long after it began (re)joining its group
    #: is unhealthy, and leaves and rejoins (consumer/membership.py says why and how).
    join_timeout_s: float = Field(default=60.0, ge=5)
    #: ``consume --workers N`` restarts a dead worker after 1, 2, 4 ... s (at most 30 s) and
    #: gives up (stops the others, exits 1) when workers died this many times ...
    max_restarts: int = Field(default=5, ge=0)
    #: ... within this many seconds.
    restart_window_s: float = Field(default=300.0, gt=0)
    #: Folder of the SQL migrations (default: the ones shipped with predstream).
    migrations_dir: Path | None = None
    #: Rows per transaction of ``predstream identify`` (it locks them on the live table).
    identify_batch_size: int = Field(default=1000, ge=1, le=100_000)

    @field_validator("database_url")
    @classmethod
    def _conninfo(cls, v: str | None) -> str | None:
        """A URL libpq cannot parse is a bad setting, said at start-up (not a database outage)."""
        if v:
            import psycopg

            try:
                psycopg.conninfo.conninfo_to_dict(v)
            except psycopg.ProgrammingError as exc:
                why = redact_url(str(exc).strip().splitlines()[0], v)
                raise ValueError(f"{why}: expected a URL like postgresql://user@host:5432/dbname") from None
        return v

    def require_database_url(self) -> str:
        """The database URL; a clear error when none is set."""
        if self.database_url:
            return self.database_url
        raise ConfigError(
            "no database: set PREDSTREAM_DATABASE_URL=postgresql://user@host/db "
            "or start the local stack with `predstream up`"
        )


# user:password@ up to the last "@" of the authority (an unencoded "@" in a password);
# password=value in a conninfo or URL query, quoted values included.
_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^/\s]*(@)|(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", re.IGNORECASE)
# libpq quotes pieces of a malformed URL or conninfo in its errors: they may hold the password.
_LIBPQ_ECHO = re.compile(
    r'(invalid percent-encoded token: |missing "=" after |invalid URI query parameter: |'
    r'invalid connection option |unterminated quoted string in connection info string)("[^"]*")?'
)
# user:password@ without a scheme's "//" (e.g. a mistyped "postgres:/user:pw@host")
_USERINFO = re.compile(r'(^|[/"])([^:/@\s"]+):[^@\s"]*@')


def _passwords(url: str) -> list[str]:
    """The password(s) written in ``url`` (URL userinfo or conninfo ``password=``), raw and decoded."""
    from urllib.parse import unquote

    found = []
    for m in re.finditer(r"password\s*=\s*('(?:[^'\\]|\\.)*'?|\S+)", url, re.IGNORECASE):
        value = m.group(1)
        found.append(value.strip("'").replace("\\'", "'") if value.startswith("'") else value)
    if "@" in url:
        left = url.rsplit("@", 1)[0]
        left = left.split("://", 1)[1] if "://" in left else left.rsplit("/", 1)[-1]
        if ":" in left:
            found.append(left.split(":", 1)[1])
    return [p for raw in found for p in {raw, unquote(raw)} if p]


def redact_url(text: str, urls: str | Iterable[str | None] | None = None) -> str:
    """``text`` (a database URL, conninfo or error message) with passwords replaced by ``***``.

    Hides the password of every URL (``user:password@``) and conninfo (``password=...``) in
    the text, and in what libpq quotes from a malformed one. ``urls``: the URL(s) the text
    may be about, when known; then a quoted piece loses only those URLs' passwords, so the
    user's own typo stays readable (``missing "=" after "not-a-url"``). Unknown, a quoted
    piece is shown unless it looks like ``user:password@`` or is a percent-encoding error
    (which may be in the password).
    """
    text = _PASSWORD.sub(lambda m: (m.group(1) + "***" + m.group(2)) if m.group(1) else m.group(3) + "***", text)
    given = [urls] if isinstance(urls, str) else [u for u in (urls or ()) if u]
    secrets = sorted({p for u in given for p in _passwords(u)}, key=len, reverse=True) if given else None

    def _echo(m: re.Match[str]) -> str:
        if m.group(2) is None:
            return m.group(0)
        inner = m.group(2)[1:-1]
        if secrets is not None:
            for secret in secrets:
                inner = inner.replace(secret, "***")
        elif m.group(1).startswith("invalid percent-encoded token"):
            inner = "***"
        else:
            inner = _USERINFO.sub(lambda u: f"{u.group(1)}{u.group(2)}:***@", inner)
        return f'{m.group(1)}"{inner}"'

    return _LIBPQ_ECHO.sub(_echo, text)
