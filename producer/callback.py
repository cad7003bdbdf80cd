"""``TrainingPredictionsCallback``: stream eval predictions from a ``transformers.Trainer``.

::

    callback = TrainingPredictionsCallback(dataset="eval.jsonl", n_samples=32, seed=7,
                                           every_n_steps=500, max_new_tokens=64)
    Trainer(model=model, args=args, processing_class=tokenizer, callbacks=[callback], ...).train()

What happens when:

* ``on_train_begin``: the job id is settled (below), the samples are drawn
  (:func:`predstream.producer.sampler.sample_dataset`, or
  :func:`predstream.producer.set_copies.load_set_for_training` for ``prediction_set=``: a file,
  or a set read from ``database_url=`` / ``settings.database_url``, with a verified local copy
  used when the database does not answer), and the publisher is created from ``settings`` unless one was passed in.
  Without ``settings=``, they are ``ProducerSettings`` from ``PREDSTREAM_*``, with the
  running local stack's broker and database for what the environment does not set
  (:func:`predstream.local.settings_with_local_stack`). A dataset or
  setting that is wrong fails here, before the first training step.
* Predictions are recorded after each evaluation (``on_evaluate=True``), every
  ``every_n_steps`` optimizer steps, and/or at each epoch end (``on_epoch_end=True``) —
  never twice for the same ``global_step``. The model is switched to eval mode for the
  generation and back afterwards; the training's RNG streams are not disturbed.
  A failure while generating is logged and training goes on (``raise_errors=True`` to
  stop instead).
* ``on_train_end``: the publisher is flushed (``flush_timeout_s``, default the publisher's
  settings' ``flush_timeout_s``: what is undelivered then is spooled) and the
  delivered/spooled/dropped counts are logged; a publisher the callback created is closed.
* A ``trainer.evaluate()`` after ``train()`` is recorded too: the callback opens a
  publisher again for it (one passed in is used as it is), then flushes and closes it the
  same way, so nothing is left running and the process exits promptly.

Job id and attempt: rank 0 settles them and broadcasts them to the other ranks, so all
ranks of a run share them. A new job id is ``<run_name or output_dir's name>-<UTC
time>-<6 hex>``, written to ``<output_dir>/predstream-job.json`` (:mod:`predstream.producer.jobfile`).
A run resumed from a checkpoint (``state.global_step > 0`` at train begin) reuses the job id
in that file, so a step it regenerates lands on the same rows; a fresh run in the same
folder gets a new id. Pass ``job_id=`` to choose it yourself (then every rank must pass the
same one). The file also keeps the job's attempt counter: 0 for a new job, + 1 at every
train begin that continues it; every event carries it, and the higher attempt wins over
the first attempt's rows whatever the hosts' clocks say. And it keeps the eval dataset's
id as the job's first start settled it (``dataset_id=`` chooses it yourself): a resumed run
reuses it, so the same rows come back under the same ``event_id`` even when the dataset is
given under another path or the checkout moved.

Distributed: every rank takes part; rank ``r`` of ``W`` generates ``samples[r::W]`` and
publishes its own events (see :class:`predstream.producer.recorder.PredictionRecorder`).

The tokenizer is the Trainer's ``processing_class`` (a processor's ``.tokenizer`` is
used), or ``tokenizer=`` given here.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised by tests/test_imports.py
    raise ImportError(
        f"TrainingPredictionsCallback needs transformers and torch ({exc.name} is missing): "
        "pip install 'predstream[train]'"
    ) from exc

from predstream.schemas import MAX_JOB_ID_CHARS, GenerationSettings

from .generator import Generator
from .jobfile import JOB_FILE, settle_dataset_id, settle_job
from .prediction_sets import prediction_set_samples
from .recorder import PredictionRecorder, distributed_rank
from .sampler import RowFormat, Sample, dataset_id, sample_dataset
from .set_copies import load_set_for_training
from .settings import ProducerSettings

__all__ = ["TrainingPredictionsCallback", "JOB_FILE"]

_log = logging.getLogger(__name__)


class TrainingPredictionsCallback(TrainerCallback):
    """Samples eval prompts once, then records the model's predictions during training."""

    def __init__(
        self,
        dataset: Any = None,
        prediction_set: str | Path | None = None,
        *,
        n_samples: int = 16,
        seed: int = 0,
        job_id: str | None = None,
        every_n_steps: int | None = None,
        on_evaluate: bool = True,
        on_epoch_end: bool = False,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        num_beams: int = 1,
        num_return_sequences: int = 1,
        generation_seed: int | None = None,
        generation: GenerationSettings | None = None,
        batch_size: int = 32,
        settings: ProducerSettings | None = None,
        publisher: Any = None,
        database_url: str | None = None,
        dataset_id: str | None = None,
        row_format: RowFormat | None = None,
        tokenizer: Any = None,
        flush_timeout_s: float | None = None,
        raise_errors: bool = False,
    ) -> None:
        if (dataset is None) == (prediction_set is None):
            raise ValueError("TrainingPredictionsCallback needs exactly one of dataset= or prediction_set=")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1 (or None), not {every_n_steps}")
        if not (on_evaluate or on_epoch_end or every_n_steps):
            raise ValueError("nothing would be recorded: set on_evaluate=True, on_epoch_end=True or every_n_steps=N")
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, not {n_samples}")
        if job_id is not None and not (0 < len(job_id) <= MAX_JOB_ID_CHARS):
            raise ValueError(f"job_id must be 1-{MAX_JOB_ID_CHARS} characters")
        self.dataset = dataset
        self.prediction_set = prediction_set
        self.n_samples = n_samples
        self.seed = seed
        self.every_n_steps = every_n_steps
        self.record_on_evaluate = on_evaluate
        self.record_on_epoch_end = on_epoch_end
        self.generator = Generator(
            generation,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens if generation is None else None,
            do_sample=do_sample if generation is None else None,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            num_beams=num_beams if generation is None else None,
            num_return_sequences=num_return_sequences if generation is None else None,
            seed=generation_seed,
        )
        self.settings = settings
        self.database_url = database_url
        self.dataset_id = dataset_id
        self.row_format = row_format or RowFormat()
        self.tokenizer = tokenizer
        self.flush_timeout_s = flush_timeout_s
        self.raise_errors = raise_errors
        self._given_job_id = job_id
        self._publisher = publisher
        self._owns_publisher = False
        self._train_ended = False
        self.job_id: str | None = job_id
        #: the job's attempt counter, settled at train begin (see producer.jobfile)
        self.attempt = 0
        self.recorder: PredictionRecorder | None = None
        self.samples: list[Sample] = []
        self._last_step: int | None = None
        self.last_report: Any = None

    # -- Trainer events -----------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if kwargs.get("model") is not None:
            self.generator.check_fits(kwargs["model"])  # else every step would fail to generate
        self.job_id, self.attempt, source_id = self._settle_job(args, state)
        if self.prediction_set is not None:
            settings = self._producer_settings()
            if self.database_url:  # database_url= wins over the settings'
                settings = settings.model_copy(update={"database_url": self.database_url})
            self.samples = prediction_set_samples(load_set_for_training(self.prediction_set, settings))
        else:
            self.samples = sample_dataset(
                self.dataset, self.n_samples, seed=self.seed, dataset_id=source_id, fmt=self.row_format
            )
        self._open_publisher()
        self.recorder = PredictionRecorder(self._publisher, self.generator, self.samples, self.job_id,
                                           attempt=self.attempt)
        self._last_step = None
        self._train_ended = False
        rank, world = distributed_rank()
        _log.info(
            "predictions for job %s (attempt %d): %d samples from %s, rank %d of %d",
            self.job_id, self.attempt, len(self.samples), self.samples[0].sample_source_id, rank, world,
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self._record(state, kwargs)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.record_on_evaluate:
            return
        if self._train_ended and self.recorder is not None:  # trainer.evaluate() after train()
            self._open_publisher()
            self.recorder.publisher = self._publisher
        self._record(state, kwargs)
        if self._train_ended:
            self._finish("after train end")

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.record_on_epoch_end:
            self._record(state, kwargs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._train_ended = True  # an evaluate() after this opens a publisher again
        self._finish("at train end")

    # -- helpers ----------------------------------------------------------------

    def _producer_settings(self) -> ProducerSettings:
        """``settings=`` if given, else ``PREDSTREAM_*`` with the running local stack's
        addresses for what the environment does not set (the one route the CLI takes too;
        :mod:`predstream.local` is imported here, lazily, and imports no CLI)."""
        if self.settings is None:
            from predstream.local import settings_with_local_stack

            self.settings = settings_with_local_stack(ProducerSettings)
        return self.settings

    def _open_publisher(self) -> None:
        """Create the callback's own publisher unless it has one (or one was passed in)."""
        if self._publisher is not None:
            return
        from .publisher import Publisher

        self._publisher = Publisher(self._producer_settings(), job_id=self.job_id)
        self._owns_publisher = True

    def _finish(self, when: str) -> None:
        """Flush (bounded), log the counts, and close the publisher if the callback made it."""
        publisher = self._publisher
        if publisher is None:
            return
        try:
            self._log_report(when, publisher.flush(self.flush_timeout_s))
        finally:
            if self._owns_publisher:
                publisher.close(self.flush_timeout_s)
                self._publisher = None

    def _log_report(self, when: str, report: Any) -> None:
        self.last_report = report
        _log.info(
            "predictions of job %s %s: %s delivered, %s spooled, %s dropped, %s pending",
            self.job_id,
            when,
            getattr(report, "delivered", "?"),
            getattr(report, "spooled", "?"),
            getattr(report, "dropped", "?"),
            getattr(report, "pending", "?"),
        )

    def _record(self, state: Any, kwargs: dict[str, Any]) -> None:
        if self.recorder is None:
            _log.warning("TrainingPredictionsCallback was not started (on_train_begin not called); nothing recorded")
            return
        step = int(state.global_step)
        if step == self._last_step:
            return
        self._last_step = step
        tokenizer = self._tokenizer(kwargs)
        model = kwargs.get("model")
        try:
            if tokenizer is None or model is None:
                raise ValueError(
                    "no tokenizer: give the Trainer processing_class=tokenizer, or the callback tokenizer="
                    if tokenizer is None
                    else "the Trainer passed no model to the callback"
                )
            self.recorder.record(model, tokenizer, step=step, epoch=state.epoch or 0.0)
        except Exception:
            if self.raise_errors:
                raise
            _log.exception("recording predictions at step %d failed; training goes on", step)

    def _tokenizer(self, kwargs: dict[str, Any]) -> Any:
        if self.tokenizer is not None:
            return self.tokenizer
        tok = kwargs.get("processing_class") or kwargs.get("tokenizer")
        if tok is not None and not callable(getattr(tok, "decode", None)) and hasattr(tok, "tokenizer"):
            tok = tok.tokenizer  # a multimodal processor
        return tok

    def _settle_job(self, args: Any, state: Any) -> tuple[str, int, str | None]:
        """(job id, attempt, dataset id) as rank 0 settles them, on every rank."""
        rank, world = distributed_rank()
        settled = None
        if rank == 0:
            job_id, attempt = _job_for(args, state, self._given_job_id)
            settled = (job_id, attempt, self._dataset_id(args))
        if world > 1:
            import torch.distributed as dist

            box = [settled]
            dist.broadcast_object_list(box, src=0)
            settled = box[0]
        assert settled is not None
        return settled

    def _dataset_id(self, args: Any) -> str | None:
        """``dataset_id=`` if given, else the id kept in the job file since the job's first
        start (:func:`predstream.producer.jobfile.settle_dataset_id`); ``None`` for a prediction set."""
        if self.dataset_id is not None or self.dataset is None:
            return self.dataset_id
        out = getattr(args, "output_dir", None) or "trainer_output"
        return settle_dataset_id(out, lambda: dataset_id(self.dataset))


def _job_for(args: Any, state: Any, given: str | None) -> tuple[str, int]:
    """Rank 0's (job id, attempt): continued from the job file or new (see producer.jobfile)."""
    out = Path(getattr(args, "output_dir", None) or "trainer_output")

    def new_job_id() -> str:
        base = getattr(args, "run_name", None) or out.resolve().name or "run"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{base[: MAX_JOB_ID_CHARS - 30]}-{stamp}-{secrets.token_hex(3)}"

    return settle_job(out, resumed=state.global_step > 0, job_id=given, new_job_id=new_job_id)
