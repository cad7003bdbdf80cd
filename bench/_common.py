"""What every benchmark shares: figures, sizes, the stack context, the workload, statistics."""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from predstream.schemas.event import PredictionEvent

__all__ = [
    "Figure",
    "BenchResult",
    "Size",
    "SIZES",
    "BenchContext",
    "make_events",
    "percentile",
    "machine_facts",
    "wait_for",
]


@dataclass
class Figure:
    """One measured number, with its target when the issue sets one."""

    name: str
    value: float
    unit: str
    target: str | None = None  # e.g. "<= 1 %"
    passed: bool | None = None  # None: no target
    note: str = ""

    def check(self, op: str, bound: float, text: str | None = None) -> Figure:
        """Set the target ``value <op> bound`` and whether it holds."""
        self.target = text or f"{op} {bound:g} {self.unit}".strip()
        self.passed = self.value <= bound if op == "<=" else self.value >= bound
        return self


@dataclass
class BenchResult:
    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def add(self, name: str, value: float, unit: str, note: str = "") -> Figure:
        fig = Figure(name, float(value), unit, note=note)
        self.figures.append(fig)
        return fig

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Size:
    """How much each benchmark does: ``smoke`` (the test suite's run, seconds), ``small``
    (about a minute), ``full`` (the figures of docs/performance.md, several minutes)."""

    name: str
    # training cost
    bursts: int  # bursts of 1,000 publish() calls (one eval round each)
    old_writer_rows: int  # rows written one transaction each
    batch_inserts: int  # batches of 1,000 rows, one transaction each
    # sink throughput and replay
    sink_events: int
    worker_counts: tuple[int, ...]
    # latency
    latency_rate: int  # events per second
    latency_seconds: float
    # generation
    gen_prompts: int
    gen_new_tokens: int


SIZES = {
    "smoke": Size("smoke", bursts=2, old_writer_rows=100, batch_inserts=1, sink_events=500,
                  worker_counts=(1, 2), latency_rate=2_000, latency_seconds=1.0, gen_prompts=32, gen_new_tokens=4),
    "small": Size("small", bursts=5, old_writer_rows=300, batch_inserts=3, sink_events=3_000,
                  worker_counts=(1, 2), latency_rate=2_000, latency_seconds=2.0, gen_prompts=32, gen_new_tokens=8),
    "full": Size("full", bursts=50, old_writer_rows=3_000, batch_inserts=20, sink_events=200_000,
                 worker_counts=(1, 2), latency_rate=2_000, latency_seconds=15.0, gen_prompts=128, gen_new_tokens=16),
}


# -- the workload ---------------------------------------------------------------------

_WORDS = (
    "the of and to in is that for it as with was on be by this are at from or an which have not but "
    "model loss gradient token batch learning rate epoch sum answer question explain why because "
    "therefore compute value result first second step function return number list string example "
    "assistant user system context history previous following given total each other where when"
).split()


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    length = 0
    while length < chars:
        word = rng.choice(_WORDS)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:chars]


def make_events(n: int, *, job_id: str | None = None, seed: int = 0, eval_size: int = 500,
                prompt_chars: int = 600, prediction_chars: int = 400) -> list[PredictionEvent]:
    """``n`` realistic events (~1 KB of prompt and prediction each), validated by the contract.

    Like a training run: an eval set of ``eval_size`` prompts, predicted again at every
    step (``step = i // eval_size``), so prompt ids repeat and event ids do not.
    """
    rng = random.Random(seed)
    job_id = job_id or "bench-" + uuid.uuid4().hex[:8]
    prompts = [_text(rng, prompt_chars) for _ in range(min(eval_size, n) or 1)]
    truths = [_text(rng, 40) for _ in prompts]
    predictions = [_text(rng, prediction_chars) for _ in range(256)]
    now = datetime.now(UTC)
    events = []
    for i in range(n):
        k = i % len(prompts)
        events.append(PredictionEvent.create(
            job_id=job_id, epoch=i / (len(prompts) * 10), step=i // len(prompts), sample_index=k, source_index=k,
            prompt=prompts[k], ground_truth=truths[k], prediction=predictions[(i * 7 + k) % len(predictions)],
            sample_source="dataset", sample_source_id="bench-eval.jsonl", model_name="bench/model",
            prompt_tokens=150, completion_tokens=100, generation_ms=12.5, produced_at=now,
        ))
    return events


# -- statistics -----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(q / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: {what} not reached within {timeout:.0f} s")
        time.sleep(interval)


# -- the stack ------------------------------------------------------------------------


class BenchContext:
    """The embedded stack the benchmarks share, and fresh databases and topics on it."""

    _TEMPLATE = "bench_template"

    def __init__(self, stack: Any, size: Size, workdir: Path) -> None:
        self.stack = stack
        self.size = size
        self.workdir = workdir
        self._template_ready = False
        self._cache: dict[str, Any] = {}

    @property
    def bootstrap(self) -> str:
        return self.stack.bootstrap

    def new_database(self, prefix: str = "b") -> str:
        """A fresh database with every migration applied; returns its URL."""
        import psycopg

        from predstream.consumer import ConsumerSettings, apply_migrations

        admin = self.stack.database_url("postgres")
        if not self._template_ready:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._TEMPLATE}"')
                conn.execute(f'CREATE DATABASE "{self._TEMPLATE}"')
            apply_migrations(ConsumerSettings(database_url=self.stack.database_url(self._TEMPLATE)))
            self._template_ready = True
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._TEMPLATE}"')
        return self.stack.database_url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`new_database` (keeps the disk small between runs)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.stack.database_url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def new_topic(self, partitions: int = 6) -> str:
        from predstream.local import create_topics

        name = "bench." + uuid.uuid4().hex[:10]
        create_topics(self.bootstrap, {name: partitions, name + ".dlq": 1})
        return name

    def producer_settings(self, topic: str, **overrides: Any) -> Any:
        from predstream.producer.settings import ProducerSettings

        spool = self.workdir / ("spool-" + uuid.uuid4().hex[:8])
        return ProducerSettings(kafka_bootstrap=self.bootstrap, topic=topic, spool_dir=spool,
                                spool_auto_drain=False, **overrides)

    def consumer_settings(self, topic: str, database_url: str, **overrides: Any) -> Any:
        from predstream.consumer.settings import ConsumerSettings

        base: dict[str, Any] = dict(kafka_bootstrap=self.bootstrap, topic=topic, database_url=database_url,
                                    group_id="bench." + uuid.uuid4().hex[:8], session_timeout_ms=6000)
        base.update(overrides)
        return ConsumerSettings(**base)

    def remember(self, key: str, value: Any) -> None:
        """Keep a figure for a later benchmark (e.g. the raw COPY rate for replay)."""
        self._cache[key] = value

    def recall(self, key: str) -> Any:
        return self._cache.get(key)

    def loaded_topic(self) -> tuple[str, list[PredictionEvent]]:
        """A topic holding ``size.sink_events`` events (made once, shared by the sink and
        replay benchmarks), and the events."""
        if "loaded" not in self._cache:
            from predstream.producer.publisher import Publisher

            events = make_events(self.size.sink_events, seed=1)
            topic = self.new_topic()
            with Publisher(self.producer_settings(topic, queue_max_messages=1_000_000), job_id="bench-load") as pub:
                pub.publish_many(events)
                report = pub.flush(timeout=600)
            if report.delivered != len(events):
                raise RuntimeError(f"benchmark: loading the topic delivered only {report}")
            self._cache["loaded"] = (topic, events)
        return self._cache["loaded"]


def count_rows(database_url: str) -> int:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM training_predictions").fetchone()[0]


# -- machine facts ----------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """What the figures ran on (they are ratios, but the machine still matters)."""
    facts: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                facts["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
        facts["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import confluent_kafka

        facts["librdkafka"] = confluent_kafka.libversion()[0]
        facts["confluent_kafka"] = confluent_kafka.__version__
    except ImportError:
        pass
    try:
        import psycopg

        facts["psycopg"] = psycopg.__version__
        facts["psycopg_impl"] = psycopg.pq.__impl__
    except ImportError:
        pass
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_threads"] = torch.get_num_threads()
        facts["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        facts["torch"] = None
    return facts
