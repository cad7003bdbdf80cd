"""Settings both sides share: where the broker is, which topic, which framing.

Each side has one pydantic-settings model (``predstream.producer.ProducerSettings``,
``predstream.consumer.ConsumerSettings``) that extends :class:`StreamSettings`. They read
their arguments and the environment (prefix ``PREDSTREAM_``), are validated once at
start-up, and are passed in explicitly. Nothing here knows where a developer's local stack
runs: :func:`load_settings` takes *fallbacks* for what neither the arguments nor the
environment give, and the entry points hand in the local stack's addresses
(:mod:`predstream.local` says how).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError
from .transport import DEFAULT_TOPIC, parse_kafka_options

__all__ = ["StreamSettings", "check_database_url", "load_settings"]


class StreamSettings(BaseSettings):
    """Broker, topic and encoding settings common to both sides."""

    model_config = SettingsConfigDict(env_prefix="PREDSTREAM_", extra="ignore", validate_default=True)

    #: ``host:port[,host:port]``; the CLI and the training callback fall back to the
    #: running local stack's broker.
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
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Dict-valued settings arrive as raw text (JSON or k=v,k=v); our validator parses them.
        return init_settings, _RawEnv(settings_cls, env_prefix="PREDSTREAM_"), file_secret_settings

    def require_bootstrap(self) -> str:
        """The broker address; a clear error when none is set."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
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


S = TypeVar("S", bound=StreamSettings)


def check_database_url(v: str | None) -> str | None:
    """A ``database_url`` validator: a URL libpq cannot parse is a bad setting, said at
    start-up (not a database outage)."""
    if v:
        import psycopg

        from .redaction import redact_url

        try:
            psycopg.conninfo.conninfo_to_dict(v)
        except psycopg.ProgrammingError as exc:
            why = redact_url(str(exc).strip().splitlines()[0], v)
            raise ValueError(f"{why}: expected a URL like postgresql://user@host:5432/dbname") from None
    return v


def load_settings(cls: type[S], *, fallbacks: Mapping[str, Any] | None = None, **overrides: Any) -> S:
    """Build a settings model, turning a validation failure into one :class:`ConfigError` line.

    Each field comes from the first of: ``overrides`` (a CLI flag or an argument; ``None``
    means not given), the environment (``PREDSTREAM_*``), ``fallbacks`` (e.g. the running
    local stack's addresses), the model's default.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    settings = _build(cls, given)
    missing = {
        k: v
        for k, v in (fallbacks or {}).items()
        if v is not None and k in cls.model_fields and k not in settings.model_fields_set
    }
    return _build(cls, {**given, **missing}) if missing else settings


def _build(cls: type[S], values: dict[str, Any]) -> S:
    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"bad setting PREDSTREAM_{field.upper()}: {msg}", field=field) from None


class _RawEnv(EnvSettingsSource):
    """Environment source that hands dict-valued settings to our validators unparsed."""

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        if field_name in ("kafka_options", "schema_registry_options"):
            return value
        return super().prepare_field_value(field_name, field, value, value_is_complex)
