"""The training side of predstream: sample eval prompts, generate, publish events to Kafka.

* :mod:`.sampler` — deterministic samples with stable identity (``Sample``, ``sample_dataset``)
* :mod:`.prediction_sets` — curated prediction sets loaded as samples, from an export file or
  Postgres (what a set is: :mod:`predstream.schemas.prediction_set`)
* :mod:`.set_copies` — a set for training: the database's, or its verified local copy
* :mod:`.generator` — batched, left-padded generation (needs torch)
* :mod:`.recorder` — ``PredictionRecorder``: generate + publish, for custom training loops
* :mod:`.callback` — ``TrainingPredictionsCallback`` for ``transformers.Trainer`` (needs transformers)
* :mod:`.publisher` — hand events to Kafka without blocking (:mod:`.watcher`: is the broker there)
* :mod:`.spool` / :mod:`.spool_drain` — keep events on disk during an outage; re-send them after
* :mod:`.registry` — Confluent framing through a schema registry; its outages spool too

``import predstream.producer`` needs neither torch, transformers nor psycopg. The names that need
torch/transformers (``Generator``, ``Generation``, ``TrainingPredictionsCallback``) are
imported on first use and raise an ``ImportError`` that says
``pip install 'predstream[train]'`` when the extra is missing.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .dataset_source import NO_ROW
from .errors import (
    DatasetError,
    ProducerError,
    PublisherClosedError,
    SpoolError,
)
from .prediction_sets import (
    fetch_prediction_set,
    load_prediction_set,
    prediction_set_from_samples,
    prediction_set_samples,
)
from .publisher import Publisher, PublishReport
from .recorder import PredictionRecorder, distributed_rank
from .sampler import (
    DEFAULT_GROUND_TRUTH_FIELDS,
    BadRow,
    RowFormat,
    Sample,
    check_dataset_id,
    read_dataset,
    row_to_sample,
    sample_dataset,
)
from .settings import ProducerSettings
from .spool import spool_status
from .spool_drain import drain_spool

__all__ = [
    "ProducerSettings",
    "Publisher",
    "PublishReport",
    "Sample",
    "RowFormat",
    "DEFAULT_GROUND_TRUTH_FIELDS",
    "sample_dataset",
    "read_dataset",
    "row_to_sample",
    "check_dataset_id",
    "BadRow",
    "NO_ROW",
    "drain_spool",
    "spool_status",
    "load_prediction_set",
    "fetch_prediction_set",
    "prediction_set_from_samples",
    "prediction_set_samples",
    "PredictionRecorder",
    "distributed_rank",
    "Generator",
    "Generation",
    "TrainingPredictionsCallback",
    "ProducerError",
    "PublisherClosedError",
    "SpoolError",
    "DatasetError",
]

# Names whose modules need the ``train`` extra: imported on first access.
_LAZY = {
    "Generator": ".generator",
    "Generation": ".generator",
    "TrainingPredictionsCallback": ".callback",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
