"""Settings both sides share: where the broker is, which topic, which framing.

Each side has one pydantic-settings model (``producer.ProducerSettings``,
``consumer.ConsumerSettings``) that extends :class:`StreamSettings`. They read the
environment (prefix ``PREDSTREAM_``), are validated once at start-up, and are passed in
explicitly. When neither ``PREDSTREAM_KAFKA_BOOTSTRAP`` nor ``PREDSTREAM_DATABASE_URL`` is
set, the addresses of a local stack started by ``predstream up`` are used (see
:func:`local_stack`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError
from .transport import DEFAULT_TOPIC, parse_kafka_options

__all__ = ["StreamSettings", "local_stack", "predstream_home", "load_settings"]



def predstream_home() -> Path:
    """Folder of the local stack's state (``$PREDSTREAM_HOME``, default ``~/.predstream``)."""
    return Path(os.environ.get("PREDSTREAM_HOME") or Path.home() / ".predstream")


def local_stack() -> dict[str, Any] | None:
    """The running local stack's state (``bootstrap``, ``database_url``, ...), or ``None``."""
    path = predstream_home() / "stack.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for pid in state.get("pids", {}).values():
        if not _alive(pid):
            return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


class StreamSettings(BaseSettings):
    """Broker, topic and encoding settings common to both sides."""

    model_config = SettingsConfigDict(env_prefix="PREDSTREAM_", extra="ignore", validate_default=True)

    #: ``host:port[,host:port]``; default: the local stack's broker.
    kafka_bootstrap: str | None = None
    #: librdkafka settings passed through as they are (TLS, SASL, tuning). JSON object or
    #: ``k=v,k=v``; e.g. ``{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}``.
    kafka_options: dict[str, str] = {}
    #: Topic of prediction events; the dead-letter topic is ``<topic>.dlq``.
    topic: str = DEFAULT_TOPIC
    #: Confluent schema registry URL; when set, the Confluent wire format is written.
    schema_registry_url: str | None = None
    #: Extra registry client settings, e.g. ``{"basic.auth.user.info": "key:secret"}``.
    schema_registry_options: dict[str, str] = {}

    @field_validator("kafka_options", "schema_registry_options", mode="before")
    @classmethod
    def _options(cls, v: Any) -> dict[str, str]:
        return parse_kafka_options(v)

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", v):
            raise ValueError("a Kafka topic name is 1-200 characters of letters, digits, '.', '_' and '-'")
        return v

    @field_validator("kafka_options")
    @classmethod
    def _librdkafka_accepts(cls, v: dict[str, str]) -> dict[str, str]:
        if v:
            from confluent_kafka import KafkaException, Producer

            try:
                Producer({**v, "client.id": "predstream-config-check", "log_level": 0})
            except KafkaException as exc:
                raise ValueError(f"librdkafka rejects it: {exc.args[0].str()}") from None
        return v

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):  # type: ignore[override]
        # Dict-valued settings arrive as raw text (JSON or k=v,k=v); our validator parses them.
        return init_settings, _RawEnv(settings_cls, env_prefix="PREDSTREAM_"), file_secret_settings

    def require_bootstrap(self) -> str:
        """The broker address, from the settings or the local stack; a clear error if neither."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        stack = local_stack()
        if stack:
            return stack["bootstrap"]
        raise ConfigError(
            "no Kafka broker: set PREDSTREAM_KAFKA_BOOTSTRAP=host:port or start the local stack with `predstream up`"
        )

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka config: bootstrap + pass-through options + ``extra`` (options win)."""
        # librdkafka's own log lines go through logging (predstream.librdkafka), not raw
        # stderr, with a broker outage reported once (schemas.kafka_log)
        from .kafka_log import BROKER_LOG

        return {"bootstrap.servers": self.require_bootstrap(), "logger": BROKER_LOG, **extra, **self.kafka_options}

    @property
    def dlq_topic(self) -> str:
        return self.topic + ".dlq"


def load_settings(cls: type[StreamSettings], **overrides: Any):
    """Build a settings model from the environment plus ``overrides`` (``None`` values are
    ignored), turning a validation failure into one :class:`ConfigError` line."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return cls(**given)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"bad setting PREDSTREAM_{field.upper()}: {msg}") from None


from pydantic_settings import EnvSettingsSource  # noqa: E402


class _RawEnv(EnvSettingsSource):
    """Environment source that hands dict-valued settings to our validators unparsed."""

    def prepare_field_value(self, field_name, field, value, value_is_complex):  # type: ignore[override]
        if field_name in ("kafka_options", "schema_registry_options"):
            return value
        return super().prepare_field_value(field_name, field, value, value_is_complex)
