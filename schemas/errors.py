"""Errors raised by the contract package.

Every error here carries a short machine-readable ``reason`` (it becomes the
``predstream-dlq-reason`` header of a dead letter) and a message for people::

    SchemaError                      root of this package
     ├── DecodeError                 bytes that are not a readable event
     │    ├── FramingError           neither single-object (C3 01) nor Confluent (00) framing, or truncated
     │    ├── UnknownSchemaError     fingerprint / registry id of no known writer schema
     │    └── MalformedBodyError     the Avro body does not parse with its writer schema
     ├── InvalidEventError           parsed, but a field breaks the contract (size, NUL, negative step, ...)
     ├── RegistryUnavailableError    the schema registry could not be asked: retry, never dead-letter
     ├── ConfigError                 a setting is wrong; the message says which and how to fix it
     └── PredictionSetError          a prediction set is missing, unreadable, inconsistent, or cannot be
          │                          stored (both sides raise it; the message says what to do)
          └── PredictionSetUnavailableError  the database holding it does not answer (an outage)
"""

from __future__ import annotations

__all__ = [
    "SchemaError",
    "DecodeError",
    "FramingError",
    "UnknownSchemaError",
    "MalformedBodyError",
    "InvalidEventError",
    "RegistryUnavailableError",
    "ConfigError",
    "PredictionSetError",
    "PredictionSetUnavailableError",
]


class SchemaError(Exception):
    """Root of every error raised by ``predstream.schemas``."""

    reason = "schema-error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(SchemaError):
    """The bytes could not be turned into an event."""

    reason = "undecodable"


class FramingError(DecodeError):
    """The frame is neither Avro single-object nor Confluent wire format, or is cut short."""

    reason = "bad-framing"


class UnknownSchemaError(DecodeError):
    """The frame names a writer schema this reader does not know and cannot fetch."""

    reason = "unknown-schema"


class MalformedBodyError(DecodeError):
    """The Avro body does not parse with the writer schema its frame names."""

    reason = "malformed-body"


class InvalidEventError(SchemaError):
    """The event decodes but breaks the contract; ``reason`` says which rule."""

    reason = "invalid-event"


class RegistryUnavailableError(SchemaError):
    """The schema registry could not be reached. The event is not at fault: retry later."""

    reason = "registry-unavailable"


class ConfigError(SchemaError):
    """A setting is missing or wrong. The message is one line that says what to fix;
    ``field`` names the settings field at fault, when one is."""

    reason = "config"

    def __init__(self, message: str, *, reason: str | None = None, field: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.field = field


class PredictionSetError(SchemaError):
    """A prediction set is missing, unreadable or inconsistent, or cannot be stored; the message
    says what to do. The one error for prediction sets, on both sides."""

    reason = "prediction-set"


class PredictionSetUnavailableError(PredictionSetError):
    """The database that holds a prediction set does not answer (an outage, not a bad set)."""

    reason = "prediction-set-unavailable"
