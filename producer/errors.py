"""Errors raised by the training side (``producer``).

Publishing never raises for an unreachable broker: events go to the spool instead. These
errors are for mistakes the caller can fix::

    ProducerError                 root of this package
     ├── PublisherClosedError     publish() after close(): create a new Publisher
     ├── SpoolError               the spool folder cannot be used (not writable, not a folder)
     ├── DatasetError             an eval dataset cannot be read or sampled (file, row, field)
     └── PredictionSetError       a prediction set cannot be found or is inconsistent
          └── PredictionSetUnavailableError  the database holding it does not answer
"""

from __future__ import annotations

__all__ = [
    "ProducerError",
    "PublisherClosedError",
    "SpoolError",
    "DatasetError",
    "PredictionSetError",
    "PredictionSetUnavailableError",
]


class ProducerError(Exception):
    """Root of every error raised by ``producer``."""


class PublisherClosedError(ProducerError):
    """The publisher was closed; events given to it now would be lost."""


class SpoolError(ProducerError):
    """The spool folder cannot be created, written or read; the message names it."""


class DatasetError(ProducerError):
    """The eval dataset cannot be read or sampled; the message names the file/row/field."""


class PredictionSetError(ProducerError):
    """A prediction set is missing, unreadable or inconsistent; the message says what to do."""


class PredictionSetUnavailableError(PredictionSetError):
    """The database that holds a prediction set does not answer (an outage, not a bad set)."""
