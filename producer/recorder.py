"""Record predictions at a point of training: generate, build events, publish.

:class:`PredictionRecorder` is the plain API for custom training loops (the
``TrainingPredictionsCallback`` uses it too)::

    samples = sample_dataset("eval.jsonl", 32, seed=7)
    with Publisher(ProducerSettings()) as publisher:   # or publisher.close() at the end
        recorder = PredictionRecorder(publisher, Generator(max_new_tokens=64), samples, job_id="run-42")
        for step in ...:
            train_step()
            if step % 500 == 0:
                recorder.record(model, tokenizer, step=step, epoch=epoch)
        publisher.flush(30)

``attempt`` is the job's attempt counter, put on every event: of two events with the same
``event_id`` the higher attempt wins, then the later ``produced_at``. A custom loop that
resumes a job from a checkpoint passes a higher ``attempt`` than the run it continues (the
``TrainingPredictionsCallback`` keeps it in the job file, see :mod:`predstream.producer.jobfile`), so
the regenerated steps replace the first attempt's rows whatever the hosts' clocks say.

Distributed runs: every rank must call :meth:`~PredictionRecorder.record` (a sharded model
needs all ranks in every forward pass). Rank ``r`` of ``W`` generates ``samples[r::W]`` and
publishes its own events; the events are the same as a one-process run's (same
``event_id``, ``sample_index``, ...). Every rank runs the same number of batches (short
ranks repeat a prompt and drop the result). Rank and world size come from
``torch.distributed`` when it is initialised, else 0 and 1; pass ``rank``/``world_size`` to
override.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from predstream.schemas import MAX_JOB_ID_CHARS, InvalidEventError, PredictionEvent

from .sampler import Sample

__all__ = ["PredictionRecorder", "EventSink", "distributed_rank"]

_log = logging.getLogger(__name__)


class EventSink(Protocol):
    """What the recorder needs of a publisher (``producer.Publisher`` is one)."""

    def publish_many(self, events: Sequence[PredictionEvent]) -> Any: ...


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` from ``torch.distributed`` when initialised, else ``(0, 1)``."""
    try:
        import torch.distributed as dist
    except ImportError:
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class PredictionRecorder:
    """Generates predictions for fixed samples and publishes them as events."""

    def __init__(
        self,
        publisher: EventSink,
        generator: Any,
        samples: Sequence[Sample],
        job_id: str,
        *,
        model_name: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        attempt: int = 0,
    ) -> None:
        if isinstance(attempt, bool) or not isinstance(attempt, int) or not 0 <= attempt <= 2**31 - 1:
            raise ValueError(f"attempt must be a whole number from 0 to 2**31-1, not {attempt!r}")
        if not job_id or len(job_id) > MAX_JOB_ID_CHARS or "\x00" in job_id:
            raise ValueError(f"job_id must be 1-{MAX_JOB_ID_CHARS} characters without NUL, not {job_id!r}")
        if not samples:
            raise ValueError("PredictionRecorder needs at least one sample")
        self.publisher = publisher
        self.generator = generator
        self.samples = list(samples)
        self.job_id = job_id
        self.model_name = model_name
        self.attempt = attempt
        self._rank = rank
        self._world_size = world_size

    def shard(self) -> tuple[list[Sample], int]:
        """This rank's samples and the per-rank count every rank pads its batches to."""
        rank, world = self._placement()
        per_rank = -(-len(self.samples) // world)
        return self.samples[rank::world], per_rank

    def _placement(self) -> tuple[int, int]:
        rank, world = distributed_rank()
        rank = rank if self._rank is None else self._rank
        world = world if self._world_size is None else self._world_size
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside world size {world}")
        return rank, world

    def record(self, model: Any, tokenizer: Any, *, step: int, epoch: float = 0.0) -> list[PredictionEvent]:
        """Generate this rank's predictions at ``step``, publish them, return the events.

        Publishing never blocks (events the broker cannot take go to the publisher's
        spool). An event that breaks the contract is logged and left out.
        """
        if not hasattr(model, "generate") and hasattr(model, "module"):
            model = model.module  # DistributedDataParallel and similar wrappers
        mine, per_rank = self.shard()
        _, world = self._placement()
        if mine:
            results = self.generator.generate(model, tokenizer, mine, pad_to=per_rank if world > 1 else None)
        elif world > 1:  # fewer samples than ranks: still take part in every forward pass
            self.generator.generate(model, tokenizer, self.samples[:1], pad_to=per_rank)
            results = []
        else:
            results = []
        model_name = self.model_name or _model_name(model)
        events = []
        for result in results:
            try:
                events.append(self._event(result, step=step, epoch=epoch, model_name=model_name))
            except InvalidEventError as exc:
                _log.error(
                    "prediction for prompt_id %s at step %d breaks the event contract and is not sent: %s",
                    result.sample.prompt_id[:12], step, exc,
                )
        if events:
            self.publisher.publish_many(events)
        _log.info("step %d: recorded %d predictions (job %s)", step, len(events), self.job_id)
        return events

    def _event(self, result: Any, *, step: int, epoch: float, model_name: str | None) -> PredictionEvent:
        s: Sample = result.sample
        return PredictionEvent.create(
            job_id=self.job_id,
            epoch=max(float(epoch or 0.0), 0.0),
            step=int(step),
            sample_index=s.sample_index,
            sequence_index=result.sequence_index,
            prompt=s.prompt,
            messages=s.messages_list(),
            ground_truth=s.ground_truth,
            prediction=result.prediction,
            prompt_id=s.prompt_id,
            source_index=s.source_index,
            sample_source=s.sample_source,
            sample_source_id=s.sample_source_id,
            model_name=model_name,
            generation=self.generator.settings,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            generation_ms=result.generation_ms,
            attempt=self.attempt,
        )


def _model_name(model: Any) -> str | None:
    config = getattr(model, "config", None)
    if config is None:  # a wrapper (DDP, FSDP, PEFT) around the model
        inner = getattr(model, "module", None)
        config = getattr(inner, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)
    return str(name)[:1024] if name else None
