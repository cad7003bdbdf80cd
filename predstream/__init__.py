"""predstream: stream training-eval predictions through Kafka into Postgres.

One installed name, four layers:

* :mod:`predstream.schemas` — the contract both sides share (Avro schemas, the event
  model, the codec, ``prompt_id``, settings);
* :mod:`predstream.producer` — the training side (sampler, generator, publisher, spool,
  ``TrainingPredictionsCallback``);
* :mod:`predstream.consumer` — the service side (workers, Postgres sink, dead letters,
  replay, backfill, migrations);
* this package's own modules — the ``predstream`` command (:mod:`predstream.cli`), the
  embedded local stack (:mod:`predstream.local`) and the demo.

The names most users need are importable from here::

    from predstream import TrainingPredictionsCallback

They are imported on first use: ``import predstream`` (and the consumer) load no torch
or transformers; a name that needs the ``train`` extra raises an ``ImportError`` saying
``pip install 'predstream[train]'`` when it is missing.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name -> the package face it comes from (imported on first access)
_LAZY = {
    "TrainingPredictionsCallback": "predstream.producer",
    "PredictionRecorder": "predstream.producer",
    "Publisher": "predstream.producer",
    "ProducerSettings": "predstream.producer",
    "sample_dataset": "predstream.producer",
    "ConsumerSettings": "predstream.consumer",
    "PredictionEvent": "predstream.schemas",
    "compute_prompt_id": "predstream.schemas",
    "settings_with_local_stack": "predstream.local",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'predstream' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
