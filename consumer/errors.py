"""Errors raised by the consumer side.

Every error says what to do. The worker treats :class:`RetriableError` subclasses as
outages (pause, back off, retry the same batch, commit nothing meanwhile) and never
dead-letters an event because of one::

    ConsumerError                        root of this package
     ├── MigrationError                  a migration file or the migrations table is not as expected
     ├── RetriableError                  an outage, not the event's fault: retry the same batch later
     │    ├── DatabaseUnavailableError   Postgres unreachable, shutting down, full, timing out, locked,
     │    │                              or not migrated yet (the message says which)
     │    └── DeadLetterUnavailableError dead letters (or redriven events) could not be delivered
     ├── WorkerError                     the consumer cannot run (fatal Kafka error, bad assignment);
     │                                   the message says what to fix
     ├── ReplayError                     a replay cannot start or go on; the message says where to resume
     ├── BackfillError                   a backfill cannot run (unreadable file, --strict and a bad row)
     └── IdentifyError                   `predstream identify` cannot run (not migrated, database gone)

A prediction set that cannot be stored, found or exported raises the one error both sides
share, ``predstream.schemas.PredictionSetError``.
"""

from __future__ import annotations

__all__ = [
    "ConsumerError",
    "MigrationError",
    "RetriableError",
    "DatabaseUnavailableError",
    "DeadLetterUnavailableError",
    "WorkerError",
    "ReplayError",
    "BackfillError",
    "IdentifyError",
]


class ConsumerError(Exception):
    """Root of every error raised by ``consumer``."""


class MigrationError(ConsumerError):
    """Migrations cannot be applied; the message names the file and what to do."""


class RetriableError(ConsumerError):
    """An outage of something the consumer depends on; the same work succeeds later."""


class DatabaseUnavailableError(RetriableError):
    """Postgres could not store the batch for a reason that is not any row's fault.

    ``sqlstate`` is the server's error code when it sent one (``None`` for a lost
    connection). The message is one line and never contains a password.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DeadLetterUnavailableError(RetriableError):
    """The broker did not acknowledge dead letters (or redriven events) in time."""


class WorkerError(ConsumerError):
    """The worker cannot go on; the message says what to fix."""


class BackfillError(ConsumerError):
    """A backfill cannot run (unreadable file, ``--strict`` and a bad row, database gone)."""


class IdentifyError(ConsumerError):
    """The old writer's rows cannot be identified now; the message says what to do."""


class ReplayError(ConsumerError):
    """A replay cannot start or cannot go on; the message says where to resume."""
