"""Errors raised by the training side (``producer``).

::

    ProducerError                    root of this package
     ├── DatasetError                a dataset cannot be read or sampled (file, row, field)
     └── PredictionSetError          a prediction set cannot be found or is inconsistent
"""

from __future__ import annotations

__all__ = ["ProducerError", "DatasetError", "PredictionSetError"]


class ProducerError(Exception):
    """Root of every error raised by ``producer``."""


class DatasetError(ProducerError):
    """The eval dataset cannot be read or sampled; the message names the file/row/field."""


class PredictionSetError(ProducerError):
    """A prediction set is missing, unreadable or inconsistent; the message says what to do."""
