"""Benchmark 2: events per second from the topic to committed rows.

The topic holds ``size.sink_events`` realistic events (~1 KB of prompt and prediction
each, 6 partitions), published before the clocks start. On the same PostgreSQL, each into
its own fresh, migrated database:

* **raw COPY** — the same rows (the columns the consumer writes), built in memory before
  the clock starts, ``COPY``-ed straight into ``training_predictions`` in one transaction:
  the fastest way those rows get into that table, with its indexes. Run before and after
  the consumers; the faster of the two runs is the baseline (the strict choice).
* **executemany upsert** — the same rows as ``INSERT ... ON CONFLICT (event_id) DO UPDATE``
  through ``executemany``, one transaction per 2,000 rows: the obvious hand-written writer.
* **consumer, N workers** — ``run_worker_processes`` (what ``predstream consume
  --workers N`` runs), default settings, a fresh consumer group reading the topic from the
  start: poll, decode, validate, COPY to staging, upsert, commit offsets. Its clock runs
  from the first row written to the last row committed (the group join before it, about
  3 s, is reported apart as ``start-up``).
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

from ._common import BenchContext, BenchResult, count_rows, wait_for

NAME = "sink_throughput"
TITLE = "2. Sink throughput: topic -> committed rows"

_EXTRA = ("created_at", "ingested_at")


def run(ctx: BenchContext) -> BenchResult:
    from consumer.sink import UPSERT_COLUMNS

    res = BenchResult(NAME, TITLE)
    topic, events = ctx.loaded_topic()
    n = len(events)
    rows = [_row(ev, topic, i) for i, ev in enumerate(events)]
    columns = (*UPSERT_COLUMNS, *_EXTRA)

    copy_rates = [_raw_copy(ctx, rows, columns)]
    upsert_rate = _executemany_upsert(ctx, rows, columns)
    consumer: dict[int, dict[str, float]] = {}
    for workers in ctx.size.worker_counts:
        consumer[workers] = _consume(ctx, topic, n, workers)
    copy_rates.append(_raw_copy(ctx, rows, columns))
    copy_rate = max(copy_rates)

    res.add("raw COPY", copy_rate, "events/s", note=f"runs: {', '.join(f'{r:,.0f}' for r in copy_rates)}")
    res.add("executemany upsert", upsert_rate, "events/s")
    for workers, c in consumer.items():
        label = f"consumer, {workers} worker{'s' if workers > 1 else ''}"
        res.add(label, c["rate"], "events/s")
        res.add(f"{label} / raw COPY", 100 * c["rate"] / copy_rate, "%").check(">=", 80.0)
    best = max(consumer.values(), key=lambda c: c["rate"])
    res.add("consumer (best) / executemany upsert", best["rate"] / upsert_rate, "x")
    res.add("consumer start-up (group join to first row)", min(c["startup_s"] for c in consumer.values()), "s")
    res.details = {"events": n, "event_bytes_avg": _avg_bytes(events), "raw_copy_runs": copy_rates,
                   "executemany_upsert": upsert_rate, "consumer": consumer}
    return res


def _avg_bytes(events: list) -> float:
    sample = events[:: max(1, len(events) // 200)]
    return sum(len((e.prompt or "").encode()) + len(e.prediction.encode()) for e in sample) / len(sample)


def _row(ev: Any, topic: str, i: int) -> tuple[Any, ...]:
    """The row the consumer writes for ``ev`` (``UPSERT_COLUMNS`` + created_at, ingested_at)."""
    return (
        ev.event_id, ev.job_id, math.floor(ev.epoch), ev.epoch, ev.step, ev.sample_index, ev.sequence_index,
        ev.prompt, None if ev.messages is None else json.dumps(ev.messages_as_dicts()), ev.ground_truth,
        ev.prediction, ev.prompt_id, ev.source_index, ev.sample_source, ev.sample_source_id,
        ev.sample_source_id if ev.sample_source == "prediction_set" else None, ev.model_name,
        None if ev.generation is None else json.dumps(ev.generation.model_dump()),
        ev.prompt_tokens, ev.completion_tokens, ev.generation_ms, ev.produced_at,
        topic, i % 6, i // 6, ev.produced_at, ev.produced_at,
    )


def _raw_copy(ctx: BenchContext, rows: list[tuple], columns: tuple[str, ...]) -> float:
    import psycopg

    url = ctx.new_database("copy")
    try:
        with psycopg.connect(url) as conn:
            t0 = time.perf_counter()
            with conn.cursor() as cur, cur.copy(f"COPY training_predictions ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            seconds = time.perf_counter() - t0
        assert count_rows(url) == len(rows)
    finally:
        ctx.drop_database(url)
    return len(rows) / seconds


def _executemany_upsert(ctx: BenchContext, rows: list[tuple], columns: tuple[str, ...], batch: int = 2000) -> float:
    import psycopg

    sql = (
        f"INSERT INTO training_predictions AS t ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        "ON CONFLICT (event_id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "event_id")
        + " WHERE t.produced_at IS NULL OR t.produced_at < EXCLUDED.produced_at"
    )
    url = ctx.new_database("upsert")
    try:
        with psycopg.connect(url) as conn:
            t0 = time.perf_counter()
            for start in range(0, len(rows), batch):
                with conn.cursor() as cur:
                    cur.executemany(sql, rows[start:start + batch])
                conn.commit()
            seconds = time.perf_counter() - t0
        assert count_rows(url) == len(rows)
    finally:
        ctx.drop_database(url)
    return len(rows) / seconds


def _inserted_so_far(conn: Any) -> int:
    """Rows inserted or being inserted: the id sequence (cheap, unlike count(*) while it grows)."""
    value, called = conn.execute("SELECT last_value, is_called FROM training_predictions_id_seq").fetchone()
    return value if called else 0


def _consume(ctx: BenchContext, topic: str, n: int, workers: int) -> dict[str, float]:
    import psycopg

    from consumer.worker import run_worker_processes

    url = ctx.new_database(f"sink{workers}")
    settings = ctx.consumer_settings(topic, url)
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def _run() -> None:
        try:
            outcome["rc"] = run_worker_processes(settings, workers, stop_event=stop)
        except BaseException as exc:
            outcome["rc"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=_run, name=f"bench-workers-{workers}", daemon=True)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            thread.start()
            wait_for(lambda: _inserted_so_far(conn) > 0 or "rc" in outcome, 120, 0.01, "the first row")
            first = time.perf_counter()
            wait_for(lambda: _inserted_so_far(conn) >= n or "rc" in outcome, 1200, 0.05, f"{n} rows inserted")
            wait_for(lambda: conn.execute("SELECT count(*) FROM training_predictions").fetchone()[0] >= n
                     or "rc" in outcome, 120, 0.02, f"{n} rows committed")
            done = time.perf_counter()
            if "rc" in outcome:
                raise RuntimeError(f"the consumer workers exited early (status {outcome['rc']})")
    finally:
        stop.set()
        thread.join(120)
    try:
        stored = count_rows(url)
    finally:
        ctx.drop_database(url)
    if stored != n:
        raise RuntimeError(f"the consumer stored {stored} rows of {n}")
    return {"rate": n / (done - first), "seconds": done - first, "startup_s": first - started}
