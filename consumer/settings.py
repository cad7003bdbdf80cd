"""The consumer side's settings, read from ``PREDSTREAM_*`` and validated at start-up."""

from __future__ import annotations

import re

from pydantic import Field

from schemas.errors import ConfigError
from schemas.settings import StreamSettings, local_stack

__all__ = ["ConsumerSettings", "redact_url"]


class ConsumerSettings(StreamSettings):
    """Everything a consumer worker, ``migrate``, ``replay`` and ``backfill`` need."""

    #: ``postgresql://user:password@host:port/db``; default: the local stack's Postgres.
    database_url: str | None = None
    #: Kafka consumer group of the workers.
    group_id: str = Field(default="predstream-consumer", min_length=1, max_length=255)
    #: Upsert once this many events are buffered ...
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
    #: Folder of the SQL migrations (default: the ones shipped with predstream).
    migrations_dir: str | None = None

    def require_database_url(self) -> str:
        """The database URL, from the settings or the local stack; a clear error if neither."""
        if self.database_url:
            return self.database_url
        stack = local_stack()
        if stack:
            return stack["database_url"]
        raise ConfigError(
            "no database: set PREDSTREAM_DATABASE_URL=postgresql://user@host/db or start the local stack with `predstream up`"
        )


# user:password@ up to the last "@" of the authority (an unencoded "@" in a password);
# password=value in a conninfo or URL query, quoted values included.
_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^/\s]*(@)|(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", re.IGNORECASE)
# libpq quotes pieces of a malformed URL or conninfo in its errors: they may be the password.
_LIBPQ_ECHO = re.compile(
    r'(invalid percent-encoded token: |missing "=" after |invalid URI query parameter: |'
    r'invalid connection option |unterminated quoted string in connection info string)("[^"]*")?'
)


def redact_url(url: str) -> str:
    """A database URL, conninfo or error text with passwords replaced by ``***``, safe to log."""
    text = _PASSWORD.sub(lambda m: (m.group(1) + "***" + m.group(2)) if m.group(1) else m.group(3) + "***", url)
    return _LIBPQ_ECHO.sub(lambda m: m.group(1) + ('"***"' if m.group(2) else ""), text)
