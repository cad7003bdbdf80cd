"""The service side: Kafka consumer workers that upsert prediction events into Postgres.

:mod:`.worker` runs the consumer loop, :mod:`.sink` writes batches idempotently,
:mod:`.dlq` keeps and redrives dead letters, :mod:`.metrics` exposes Prometheus metrics and
health, :mod:`.migrate` applies the SQL migrations, :mod:`.settings` reads the configuration.
This package never imports torch, transformers or the producer side.
"""

from .dlq import (
    DeadLetter,
    DeadLetterWriter,
    RedriveResult,
    dead_letter_headers,
    list_dead_letters,
    redrive,
    redrive_group,
)
from .errors import (
    ConsumerError,
    DatabaseUnavailableError,
    DeadLetterUnavailableError,
    MigrationError,
    RetriableError,
    WorkerError,
)
from .metrics import ConsumerMetrics, MetricsServer, check_health, serve_metrics
from .settings import ConsumerSettings, redact_url
from .sink import IngestRecord, PostgresSink, Rejection, WriteResult
from .worker import Worker, consumer_config, run_worker, run_worker_processes

__all__ = [
    "DeadLetter",
    "DeadLetterWriter",
    "RedriveResult",
    "dead_letter_headers",
    "list_dead_letters",
    "redrive",
    "redrive_group",
    "ConsumerError",
    "DatabaseUnavailableError",
    "DeadLetterUnavailableError",
    "MigrationError",
    "RetriableError",
    "WorkerError",
    "ConsumerMetrics",
    "MetricsServer",
    "check_health",
    "serve_metrics",
    "ConsumerSettings",
    "redact_url",
    "IngestRecord",
    "PostgresSink",
    "Rejection",
    "WriteResult",
    "Worker",
    "consumer_config",
    "run_worker",
    "run_worker_processes",
]
