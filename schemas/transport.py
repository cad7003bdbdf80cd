"""How events travel: topic names, the message key, header names, librdkafka options.

Both sides agree on these; changing one is a contract change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError

__all__ = [
    "DEFAULT_TOPIC",
    "dlq_topic",
    "message_key",
    "Headers",
    "parse_kafka_options",
    "redact",
]

DEFAULT_TOPIC = "training.predictions"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return topic + ".dlq"


def message_key(prompt_id: str) -> bytes:
    """Kafka key of an event: its ``prompt_id`` in UTF-8 (one prompt, one partition)."""
    return prompt_id.encode("ascii")


class Headers:
    """Kafka header names (values are UTF-8 bytes)."""

    SCHEMA = "predstream-schema"  # "fp:<16 hex>" (single-object) or "id:<n>" (registry)
    JOB_ID = "predstream-job-id"
    EVENT_ID = "predstream-event-id"
    # dead letters
    DLQ_REASON = "predstream-dlq-reason"  # short code, e.g. "nul-character:prediction"
    DLQ_ERROR = "predstream-dlq-error"  # one line for people
    ORIGINAL_TOPIC = "predstream-original-topic"
    ORIGINAL_PARTITION = "predstream-original-partition"
    ORIGINAL_OFFSET = "predstream-original-offset"
    ORIGINAL_TIMESTAMP = "predstream-original-timestamp"  # ms since epoch
    # times `predstream dlq redrive` re-published the event; kept on a dead letter it becomes again
    REDRIVE_COUNT = "predstream-redrive-count"


_SECRET_MARKERS = ("password", "secret", "sasl.jaas", "oauthbearer.config", "key.pem", "token")


def redact(conf: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a librdkafka/registry config safe to log: secret values become ``***``."""
    return {k: ("***" if any(m in k.lower() for m in _SECRET_MARKERS) else v) for k, v in conf.items()}


def parse_kafka_options(value: str | Mapping[str, Any] | Iterable[str] | None) -> dict[str, str]:
    """Parse librdkafka pass-through options.

    Accepts a mapping, a JSON object, ``"k=v,k=v"`` text, or an iterable of ``"k=v"``
    (the CLI's repeated ``-X k=v``). Values are kept as strings, as librdkafka wants.
    """
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return {str(k): _str(v) for k, v in value.items()}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"kafka options are not valid JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise ConfigError("kafka options JSON must be an object of librdkafka settings")
            return {str(k): _str(v) for k, v in obj.items()}
        items: Iterable[str] = [p for p in text.split(",") if p.strip()]
    else:
        items = value
    out: dict[str, str] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"kafka option {item!r} is not key=value (e.g. security.protocol=SASL_SSL)")
        out[key.strip()] = val.strip()
    return out


def _str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
