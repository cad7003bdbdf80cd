"""The consumer side's settings, read from ``PREDSTREAM_*`` and validated at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from predstream.schemas.errors import ConfigError
from predstream.schemas.settings import StreamSettings, check_database_url

__all__ = ["ConsumerSettings"]


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
        return check_database_url(v)

    def require_database_url(self) -> str:
        """The database URL; a clear error when none is set."""
        if self.database_url:
            return self.database_url
        raise ConfigError(
            "no database: set PREDSTREAM_DATABASE_URL=postgresql://user@host/db "
            "or start the local stack with `predstream up`"
        )
