"""Errors raised by the consumer side.

::

    ConsumerError                    root of this package
     └── MigrationError              a migration file or the migrations table is not as expected
"""

from __future__ import annotations

__all__ = ["ConsumerError", "MigrationError"]


class ConsumerError(Exception):
    """Root of every error raised by ``consumer``."""


class MigrationError(ConsumerError):
    """Migrations cannot be applied; the message names the file and what to do."""
