"""The service side: Kafka consumer workers that upsert prediction events into Postgres.

:mod:`.worker` runs the consumer loop (:mod:`.batch`: what happens to one batch;
:mod:`.membership`: its place in the group; :mod:`._backoff`: waiting out an outage);
:mod:`.runner` runs one worker with its signals, or N of them as processes;
:mod:`.transcode` turns messages into COPY rows; :mod:`.sink` writes batches idempotently;
:mod:`.dlq` writes dead letters, :mod:`.dlq_reader` lists them and :mod:`.dlq_redrive`
redrives them; :mod:`.metrics` exposes Prometheus metrics and health; :mod:`.replay`
re-reads the topic (:mod:`.replay_plan`: from where to where) and :mod:`.backfill` loads
files through the same sink; :mod:`._kafka` makes the Kafka clients and reads topics to
their end; :mod:`.prediction_sets` stores curated prompt sets, :mod:`.compare` reads runs
side by side, :mod:`.migrate` applies the SQL migrations,
:mod:`.settings` reads the configuration.
No function has its module's name (``run_replay``, ``run_backfill``, ``apply_migrations``),
so every name below is importable from here without hiding a module.
This package never imports torch, transformers or the producer side.
"""

from ._kafka import consumer_config
from .backfill import BackfillReport, run_backfill
from .compare import Comparison, compare_runs
from .dlq import REASONS, DeadLetterWriter, dead_letter_headers
from .dlq_reader import DeadLetter, list_dead_letters
from .dlq_redrive import RedriveResult, redrive, redrive_group
from .errors import (
    BackfillError,
    ConsumerError,
    DatabaseUnavailableError,
    DeadLetterUnavailableError,
    MigrationError,
    ReplayError,
    RetriableError,
    WorkerError,
)
from .identify import IdentifyReport, identify_legacy_rows
from .metrics import ConsumerMetrics, MetricsServer, check_health, serve_metrics
from .migrate import apply_migrations, pending_migrations
from .prediction_sets import StoredSet, create_set, delete_set, export_set, get_set, list_sets
from .replay import ReplayStats, run_replay
from .replay_plan import parse_offsets, parse_timestamp
from .runner import run_worker, run_worker_processes
from .settings import ConsumerSettings
from .sink import IngestRecord, PostgresSink, Rejection, SinkRecord, WriteResult
from .transcode import CopyRow, Transcoder
from .worker import Worker

__all__ = [
    "Transcoder",
    "CopyRow",
    "SinkRecord",
    "run_replay",
    "parse_offsets",
    "parse_timestamp",
    "identify_legacy_rows",
    "IdentifyReport",
    "StoredSet",
    "REASONS",
    "run_backfill",
    "apply_migrations",
    "pending_migrations",
    "BackfillReport",
    "Comparison",
    "compare_runs",
    "BackfillError",
    "ReplayError",
    "create_set",
    "delete_set",
    "export_set",
    "get_set",
    "list_sets",
    "ReplayStats",
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
    "IngestRecord",
    "PostgresSink",
    "Rejection",
    "WriteResult",
    "Worker",
    "consumer_config",
    "run_worker",
    "run_worker_processes",
]
