"""``predstream demo``: the whole idea, end to end, in one command.

1. Services: the configured Kafka and Postgres (``PREDSTREAM_KAFKA_BOOTSTRAP`` and
   ``PREDSTREAM_DATABASE_URL``), else a stack started by ``predstream up``, else a fresh
   embedded stack in a temporary folder, stopped at the end.
2. A consumer worker (its own consumer group) upserts events into Postgres while training runs.
3. A tiny GPT-2 (built locally, no downloads) learns 2-digit addition twice, as two runs that
   differ only in learning rate. ``TrainingPredictionsCallback`` publishes predictions for the
   same 16 eval prompts (same seed, so same ``prompt_id`` / ``source_index``) at each evaluation.
4. The comparison: for a few prompts, the prediction at each step in each run, and accuracy
   against the reference per step per run, as tables and a PNG plot; then the URL of the
   web view's comparison page (``serve=True``, ``--serve``: served until Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    import torch

    from predstream.consumer import Comparison
    from predstream.producer import ProducerSettings

__all__ = ["DemoPlan", "DemoResult", "run_demo"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    """How long to train and how often to look. ``quick`` is the CI size."""

    max_steps: int = 400
    eval_every: int = 50
    n_samples: int = 16
    learning_rates: tuple[float, float] = (3e-3, 1e-3)
    train_rows: int = 8000
    #: Operand digits of the addition task: 1 is learnt in a few hundred steps on a CPU,
    #: slowly enough that the accuracy curve and the changing predictions are visible.
    digits: int = 1

    @classmethod
    def quick(cls) -> DemoPlan:
        return cls(max_steps=60, eval_every=20, n_samples=8, train_rows=1000)

    @property
    def evaluations(self) -> int:
        return self.max_steps // self.eval_every


@dataclass
class DemoResult:
    jobs: list[str]
    rows: dict[str, int]
    plot: Path
    comparison: Comparison
    #: the web view's comparison page of the two runs
    compare_url: str = ""


def _services(stack: ExitStack, console: Console) -> tuple[str, str, str, bool]:
    """(bootstrap, database_url, topic, temporary) of the services to use; starts them (and
    ``temporary`` is true: they stop with ``stack``) when none are configured or running."""
    from predstream.consumer import ConsumerSettings, apply_migrations
    from predstream.local import LocalStack, create_topics, local_stack, predstream_home
    from predstream.schemas import load_settings

    settings = load_settings(ConsumerSettings)
    if settings.kafka_bootstrap and settings.database_url:
        console.print(f"[bold]services[/bold]: the configured Kafka ({settings.kafka_bootstrap}) and Postgres")
        create_topics(settings.kafka_bootstrap, {settings.topic: 6, settings.dlq_topic: 1},
                      config=settings.kafka_options)
        apply_migrations(settings)
        return settings.kafka_bootstrap, settings.database_url, settings.topic, False
    running = local_stack()
    if running:
        console.print(f"[bold]services[/bold]: the local stack started by `predstream up` ({running['bootstrap']})")
        return running["bootstrap"], running["database_url"], running.get("topic", settings.topic), False
    console.print("[bold]services[/bold]: starting an embedded broker and PostgreSQL (stopped at the end)")
    predstream_home().mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="demo-stack-", dir=predstream_home()))
    stack.callback(shutil.rmtree, home, True)
    local = LocalStack(home, durable=False)
    local.start()
    stack.callback(local.stop)
    topic = settings.topic
    create_topics(local.bootstrap, {topic: 6, topic + ".dlq": 1})
    apply_migrations(settings.model_copy(update={"database_url": local.database_url()}))
    return local.bootstrap, local.database_url(), topic, True


def _train(job_id: str, lr: float, plan: DemoPlan, eval_file: Path, out: Path,
           producer_settings: ProducerSettings) -> None:
    from transformers import Trainer, TrainingArguments

    from predstream.producer import TrainingPredictionsCallback
    from predstream.tinymodel import TokenizedTask, addition_rows, build_model, build_tokenizer

    tok = build_tokenizer()
    model = build_model(tok, n_layer=2, seed=0)
    callback = TrainingPredictionsCallback(
        dataset=str(eval_file),
        n_samples=plan.n_samples,
        seed=7,
        job_id=job_id,
        on_evaluate=True,
        max_new_tokens=4,
        batch_size=32,
        settings=producer_settings,
    )
    args = TrainingArguments(
        output_dir=str(out / job_id),
        max_steps=plan.max_steps,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=lr,
        warmup_steps=min(50, plan.max_steps // 10),
        eval_strategy="steps",
        eval_steps=plan.eval_every,
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=plan.eval_every,
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=0,
    )
    eval_rows = [json.loads(line) for line in eval_file.read_text().splitlines()]
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=TokenizedTask(addition_rows(plan.train_rows, seed=1, digits=plan.digits), tok),
        eval_dataset=TokenizedTask(eval_rows[:64], tok),
        data_collator=lambda batch: _collate(batch, tok.pad_token_id),
        processing_class=tok,
        callbacks=[callback],
    )
    trainer.train()


def _eval_rows(digits: int) -> list[dict[str, str]]:
    """Distinct eval prompts of the task, in a fixed shuffled order."""
    import random

    top = 10**digits
    rows = [{"prompt": f"{a}+{b}=", "ground_truth": str(a + b)} for a in range(top) for b in range(top)]
    random.Random(99).shuffle(rows)
    return rows[:200]


def _collate(batch: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    from predstream.tinymodel import collate

    return collate(batch, pad_token_id)


def _wait_for_rows(database_url: str, jobs: list[str], expected: int, timeout: float,
                   console: Console) -> dict[str, int]:
    import psycopg

    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    with console.status("waiting for the consumer to store every prediction...") as status:
        while True:
            with psycopg.connect(database_url) as conn:
                counts = dict(conn.execute(
                    "SELECT job_id, count(*) FROM training_predictions WHERE job_id = ANY(%s) GROUP BY job_id", (jobs,)
                ).fetchall())
            done = sum(counts.values())
            status.update(f"waiting for the consumer: {done}/{expected * len(jobs)} rows stored")
            if all(counts.get(j, 0) >= expected for j in jobs) or time.monotonic() > deadline:
                return counts
            time.sleep(0.3)


def _serve_until_stopped(database_url: str, web_port: int, path: str, console: Console,
                         stop: threading.Event | None) -> str:
    """Serve the web view (``web_port``, else any free port) until Ctrl-C or ``stop``; its URL."""
    from predstream.web import ServeSettings, WebError, start_server

    try:
        server = start_server(ServeSettings(database_url=database_url, web_port=web_port))
    except WebError:  # the port is taken (a `predstream serve` already runs?): take any free one
        server = start_server(ServeSettings(database_url=database_url, web_port=0))
    url = server.url + path
    console.print(f"[bold]web view[/bold]: {url}  (serving until Ctrl-C)", soft_wrap=True, highlight=False)
    try:
        while not (stop or threading.Event()).wait(0.5):
            pass
    except KeyboardInterrupt:
        console.print("stopping the web view")
    finally:
        server.stop()
    return url


def run_demo(plan: DemoPlan | None = None, output_dir: str | Path = "demo-output", console: Console | None = None,
             *, serve: bool = False, web_port: int = 8765, stop: threading.Event | None = None) -> DemoResult:
    """Run the demo; return the jobs, row counts, plot path, comparison and the web view's URL.

    ``serve``: then serve the web view of the database the demo used until Ctrl-C (or
    ``stop`` is set), before stopping the services it started."""
    from urllib.parse import urlencode

    from predstream import report
    from predstream.consumer import ConsumerSettings, compare_runs, run_worker
    from predstream.producer import ProducerSettings

    plan = plan or DemoPlan()
    console = console or Console()
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ExitStack() as stack:
        bootstrap, database_url, topic, temporary = _services(stack, console)
        consumer_settings = ConsumerSettings(
            kafka_bootstrap=bootstrap, database_url=database_url, topic=topic,
            group_id=f"predstream-demo-{uuid.uuid4().hex[:8]}", session_timeout_ms=6000, batch_max_wait_ms=100,
        )
        stop = threading.Event()
        worker = threading.Thread(target=run_worker, args=(consumer_settings, stop), kwargs={"handle_signals": False},
                                  name="predstream-demo-consumer", daemon=True)
        worker.start()
        stack.callback(worker.join, 30)
        stack.callback(stop.set)
        console.print(f"[bold]consumer[/bold]: worker running (group {consumer_settings.group_id})")

        eval_file = out / "eval.jsonl"
        eval_file.write_text("".join(json.dumps(r) + "\n" for r in _eval_rows(plan.digits)))
        producer_settings = ProducerSettings(kafka_bootstrap=bootstrap, topic=topic, spool_dir=out / "spool")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        jobs = []
        for i, lr in enumerate(plan.learning_rates, 1):
            job = f"demo-{stamp}-lr{lr:g}"
            jobs.append(job)
            console.rule(f"run {i}/{len(plan.learning_rates)}: {job} (learning rate {lr:g}, {plan.max_steps} steps, "
                         f"predictions for {plan.n_samples} eval prompts every {plan.eval_every} steps)")
            _train(job, lr, plan, eval_file, out, producer_settings)

        counts = _wait_for_rows(database_url, jobs, plan.n_samples * plan.evaluations, 60, console)
        comparison = compare_runs(ConsumerSettings(database_url=database_url), jobs, max_prompts=4)
        console.rule("comparison: the same prompts (same prompt_id) in both runs, step by step")
        report.print_comparison(comparison, console)
        plot = report.plot_comparison(comparison, out / "comparison.png")
        console.print(f"rows stored: {counts}; plot: {plot}; took {time.monotonic() - started:.0f} s")
        if not temporary:
            console.print(f"explore further: predstream compare {' '.join(jobs)} --format csv")
        path = "/compare?" + urlencode([("job", j) for j in jobs])
        if serve:
            url = _serve_until_stopped(database_url, web_port, path, console, stop)
        else:
            url = f"http://127.0.0.1:{web_port}{path}"
            how = ("`predstream demo --serve` keeps it up" if temporary
                   else "run `predstream serve` to open it")
            console.print(f"[bold]web view[/bold]: {url}  ({how})", soft_wrap=True, highlight=False)
    return DemoResult(jobs, counts, plot, comparison, url)
