"""The training side's settings, read from ``PREDSTREAM_*`` and validated at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from predstream.schemas.settings import StreamSettings

__all__ = ["ProducerSettings"]


def _default_spool_dir() -> Path:
    """``$PREDSTREAM_HOME/spool``, default ``~/.predstream/spool`` (the folder
    :func:`predstream.local.predstream_home` names)."""
    return Path(os.environ.get("PREDSTREAM_HOME") or Path.home() / ".predstream") / "spool"


class ProducerSettings(StreamSettings):
    """Publisher and spool settings."""

    #: Where events wait on local disk while Kafka is unreachable.
    spool_dir: Path = Field(default_factory=_default_spool_dir)
    #: Most bytes the spool may hold; past it new events are dropped with an error log.
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    #: ``batch``: fsync after each burst of appends (default); ``always``: after every
    #: event; ``never``: leave it to the OS (a machine crash may lose the newest events).
    spool_fsync: Literal["batch", "always", "never"] = "batch"
    #: librdkafka's in-memory queue bound; past it events go to the spool.
    queue_max_messages: int = Field(default=100_000, ge=1)
    #: An event not acknowledged in this time is spooled (librdkafka message.timeout.ms).
    message_timeout_ms: int = Field(default=30_000, ge=1000)
    #: ``none``, ``gzip``, ``snappy``, ``lz4`` or ``zstd``.
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"
    #: How long train end waits for delivery before spooling what is left.
    flush_timeout_s: float = Field(default=30.0, ge=0)
    #: Re-send spooled events automatically when the broker is reachable again.
    spool_auto_drain: bool = True
    #: Where ``prediction_set="name"`` is read from (``postgresql://...``); the training
    #: callback falls back to the running local stack's Postgres. Optional: training never
    #: needs the database to be up (a verified local copy of each set used is kept in
    #: ``<spool_dir>/prediction-sets``).
    database_url: str | None = None

    @field_validator("spool_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        # a relative folder is the working folder's: say where in full (logs, `spool status`)
        return Path(os.path.abspath(os.path.expanduser(v)))

    @property
    def prediction_sets_dir(self) -> Path:
        """Folder of the verified local copies of the prediction sets training used."""
        return self.spool_dir / "prediction-sets"
