"""Errors raised by the training side (``producer``).

Publishing never raises for an unreachable broker: events go to the spool instead. These
errors are for mistakes the caller can fix::

    ProducerError                 root of this package
     ├── PublisherClosedError     publish() after close(): create a new Publisher
     ├── SpoolError               the spool folder cannot be used (not writable, not a folder)
     └── DatasetError             an eval dataset cannot be read or sampled (file, row, field)

A prediction set that cannot be found, read or used raises the one error both sides share,
``predstream.schemas.PredictionSetError`` (``PredictionSetUnavailableError`` when its database
does not answer).
"""

from __future__ import annotations

__all__ = [
    "ProducerError",
    "PublisherClosedError",
    "SpoolError",
    "DatasetError",
]


class ProducerError(Exception):
    """Root of every error raised by ``producer``."""


class PublisherClosedError(ProducerError):
    """The publisher was closed; events given to it now would be lost."""


class SpoolError(ProducerError):
    """The spool folder cannot be created, written or read; the message names it."""


class DatasetError(ProducerError):
    """The eval dataset cannot be read or sampled; the message names the file/row/field."""

