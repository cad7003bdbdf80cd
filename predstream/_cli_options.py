"""The CLI options that mirror settings, declared once, and the one way commands build settings.

A settings model (``ConsumerSettings``, ``ProducerSettings``) reads ``PREDSTREAM_*`` itself
and holds every bound; an option here only overrides it, so each one defaults to ``None``
("not given") and has no bounds of its own. :func:`cli_settings` builds a command's settings:
flag, else environment, else the running local stack's address
(:func:`predstream.local.settings_with_local_stack`), else the model's default. A value the
model refuses stops the command with one line naming the flag (or the variable) at fault.
"""

from __future__ import annotations

from typing import Any, TypeVar

import typer

from predstream.schemas import ConfigError, StreamSettings

__all__ = [
    "BOOTSTRAP",
    "KAFKA_OPTION",
    "TOPIC",
    "GROUP",
    "DATABASE_URL",
    "BATCH_SIZE",
    "BATCH_MAX_WAIT_MS",
    "METRICS_PORT",
    "SHUTDOWN_TIMEOUT",
    "IDENTIFY_BATCH_SIZE",
    "MIGRATIONS_DIR",
    "SPOOL_DIR",
    "WEB_HOST",
    "WEB_PORT",
    "cli_settings",
]

S = TypeVar("S", bound=StreamSettings)

#: settings field -> the flag that overrides it
_FLAGS: dict[str, str] = {}


def _option(field: str, *names: str, help: str, metavar: str | None = None) -> Any:
    _FLAGS[field] = names[-1]
    return typer.Option(None, *names, help=help, metavar=metavar, show_default=False)


BOOTSTRAP = _option("kafka_bootstrap", "--bootstrap", metavar="HOST:PORT",
                    help="Kafka bootstrap servers (default: $PREDSTREAM_KAFKA_BOOTSTRAP, else the local stack's).")
KAFKA_OPTION = _option("kafka_options", "-X", "--kafka-option", metavar="KEY=VALUE",
                              help="librdkafka setting (repeatable), e.g. -X security.protocol=SSL; "
                            "given, these replace $PREDSTREAM_KAFKA_OPTIONS.")
TOPIC = _option("topic", "--topic",
                help="Topic of prediction events (default: $PREDSTREAM_TOPIC, else training.predictions).")
GROUP = _option("group_id", "--group",
                help="Consumer group (default: $PREDSTREAM_GROUP_ID, else predstream-consumer).")
DATABASE_URL = _option("database_url", "--database-url", metavar="URL",
                       help="Postgres URL (default: $PREDSTREAM_DATABASE_URL, else the local stack's).")
BATCH_SIZE = _option("batch_size", "--batch-size", metavar="N",
                     help="Events per database transaction (default: $PREDSTREAM_BATCH_SIZE, else 2000).")
BATCH_MAX_WAIT_MS = _option("batch_max_wait_ms", "--batch-max-wait-ms", metavar="MS",
                            help="... or once the oldest buffered event waited this long "
                                 "(default: $PREDSTREAM_BATCH_MAX_WAIT_MS, else 200).")
METRICS_PORT = _option("metrics_port", "--metrics-port", metavar="PORT",
                       help="Serve /metrics and /healthz here (worker i: port + i; 0: off; "
                            "default: $PREDSTREAM_METRICS_PORT, else 0).")
SHUTDOWN_TIMEOUT = _option("shutdown_timeout_s", "--shutdown-timeout", metavar="SECONDS",
                           help="Seconds to finish the batch in flight on SIGTERM "
                                "(default: $PREDSTREAM_SHUTDOWN_TIMEOUT_S, else 30).")
IDENTIFY_BATCH_SIZE = _option("identify_batch_size", "--batch-size", metavar="N",
                              help="Rows per transaction (default: $PREDSTREAM_IDENTIFY_BATCH_SIZE, else 1000).")
MIGRATIONS_DIR = _option("migrations_dir", "--migrations-dir", metavar="DIR",
                         help="Folder of NNNN_name.sql files (default: $PREDSTREAM_MIGRATIONS_DIR, "
                              "else the ones shipped with predstream).")
SPOOL_DIR = _option("spool_dir", "--spool-dir", metavar="DIR",
                    help="Spool folder (default: $PREDSTREAM_SPOOL_DIR, else ~/.predstream/spool).")
WEB_HOST = _option("web_host", "--host", metavar="HOST",
                   help="Address to listen on (default: $PREDSTREAM_WEB_HOST, else 127.0.0.1; "
                        "one other machines can reach needs --public).")
WEB_PORT = _option("web_port", "--port", metavar="PORT",
                   help="Port to listen on (default: $PREDSTREAM_WEB_PORT, else 8765; 0: any free port).")


def cli_settings(cls: type[S], **flags: Any) -> S:
    """``cls`` from the flags given (keyword = settings field; ``None`` or an empty list:
    not given), then ``PREDSTREAM_*``, then the running local stack's addresses."""
    from predstream.local import settings_with_local_stack

    given = {k: v for k, v in flags.items() if v is not None and not (isinstance(v, (list, tuple)) and not v)}
    try:
        return settings_with_local_stack(cls, **given)
    except ConfigError as exc:
        if exc.field in given and exc.field in _FLAGS:
            text = str(exc).replace(f"setting PREDSTREAM_{exc.field.upper()}", _FLAGS[exc.field], 1)
            raise ConfigError(text, field=exc.field) from None
        raise
