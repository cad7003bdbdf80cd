"""Benchmark 2: events per second from the topic to committed rows.

The topic holds ``size.sink_events`` realistic events (~1 KB of prompt and prediction
each, 6 partitions), published before the clocks start. On the same PostgreSQL, each into
its own fresh, migrated database:

* **raw COPY** — the same rows (the columns the consumer writes), built in memory before
  the clock starts, ``COPY``-ed straight into ``training_predictions`` in one transaction,
  in text format and in binary format (typed: cheaper for client and server alike): the
  fastest way those rows get into that table, with its indexes. Each is run before and
  after the consumers; the fastest run of all is the baseline (the strict choice).
* **executemany upsert** — the same rows (the first 20,000) as ``INSERT ... ON CONFLICT
  (event_id) DO UPDATE`` through ``executemany``, one transaction per 2,000 rows: the obvious
  hand-written writer.
* **consumer, N workers** — ``run_worker_processes`` (what ``predstream consume
  --workers N`` runs), default settings, a fresh consumer group reading the topic from the
  start: poll, transcode (or decode and validate), COPY, commit offsets. Its clock runs
  from the first row written to the last row committed (the group join before it, about
  3 s, is reported apart as ``start-up``). The CPU time the worker processes, the
  database server and the broker spend per event over that window is read with ``psutil``,
  and that of the PostgreSQL backends serving the workers' connections from
  ``/proc/<pid>/stat`` (the database's own work per row, without autovacuum, checkpointer
  and WAL writer; raw COPY's backend likewise). On a machine where all of them share few
  cores, the sum bounds the rate; the backends' share, set beside raw COPY's, gives the
  rate where the database is the limit (workers on their own cores, as in production).
* **pinned pair** — raw COPY (binary) and the consumer with 2 workers again, with
  PostgreSQL on one core and everything else (the broker, the workers, the benchmark) on
  the other (``sched_setaffinity`` on every thread, as ``taskset`` does): the database
  has a core to itself, as on a host of its own.
* **sink only** — :class:`~predstream.consumer.sink.PostgresSink` writing the events, already decoded,
  in batches of 2,000: the database side of the consumer alone (its COPY fast path, since
  every event is new).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ._common import BenchContext, BenchResult, count_rows, wait_for
from ._cpu import Pinning, backend_cpu, backend_pids, children_cpu, cpu_between, server_cpu

NAME = "sink_throughput"
TITLE = "2. Sink throughput: topic -> committed rows"

_EXTRA = ("created_at", "ingested_at")
#: rows written by the executemany contender (the first of the topic's)
_EXECUTEMANY_ROWS = 20_000
#: application_name prefix of the workers' database connections
_APP = "predstream-consumer"


def run(ctx: BenchContext) -> BenchResult:
    from predstream.consumer.sink import UPSERT_COLUMNS

    res = BenchResult(NAME, TITLE)
    topic, events = ctx.loaded_topic()
    n = len(events)
    rows = [_row(ev, topic, i) for i, ev in enumerate(events)]
    columns = (*UPSERT_COLUMNS, *_EXTRA)

    types = _column_types(ctx, columns)
    copy_cpu: list[tuple[float, float]] = []  # (server, backend) CPU per row, µs
    copy_text = [_raw_copy(ctx, rows, columns)]
    copy_binary = [_raw_copy(ctx, rows, columns, types, copy_cpu)]
    # (one statement per row, and the read model's statement triggers fire for each: a slice is enough)
    upsert_rate = _executemany_upsert(ctx, rows[:_EXECUTEMANY_ROWS], columns)
    sink_rate = _sink_only(ctx, topic, events)
    consumer: dict[int, dict[str, Any]] = {}
    for workers in ctx.size.worker_counts:
        consumer[workers] = _consume(ctx, topic, n, workers)
    copy_text.append(_raw_copy(ctx, rows, columns))
    copy_binary.append(_raw_copy(ctx, rows, columns, types, copy_cpu))
    copy_rate = max(copy_text + copy_binary)
    ctx.remember("raw_copy_rate", copy_rate)
    pinned = _pinned_pair(ctx, topic, n, rows, columns, types)

    res.add("raw COPY, text", max(copy_text), "events/s", note=f"runs: {_runs(copy_text)}")
    res.add("raw COPY, binary", max(copy_binary), "events/s", note=f"runs: {_runs(copy_binary)}")
    res.add("executemany upsert", upsert_rate, "events/s")
    res.add("sink only (decoded events)", sink_rate, "events/s")
    res.add("sink only / raw COPY", 100 * sink_rate / copy_rate, "%")
    db_copy = min(c[0] for c in copy_cpu)
    backend_copy = min(c[1] for c in copy_cpu)
    res.add("raw COPY, binary: database CPU per row", db_copy, "µs", note="every PostgreSQL process")
    res.add("raw COPY, binary: backend CPU per row", backend_copy, "µs", note="the COPY connection's backend")
    for workers, c in consumer.items():
        _consumer_figures(res, f"consumer, {workers} worker{'s' if workers > 1 else ''}", c, copy_rate,
                          db_copy, backend_copy)
    best = max(consumer.values(), key=lambda c: c["rate"])
    res.add("consumer (best) / executemany upsert", best["rate"] / upsert_rate, "x")
    res.add("consumer start-up (group join to first row)", min(c["startup_s"] for c in consumer.values()), "s")
    if pinned is not None:
        pin_copy = max(pinned["copy"])
        res.add("pinned: raw COPY, binary", pin_copy, "events/s",
                note=f"{pinned['how']}; runs: {_runs(pinned['copy'])}")
        pin_backend = min(c[1] for c in pinned["copy_cpu"])
        res.add("pinned: raw COPY, binary: backend CPU per row", pin_backend, "µs")
        _consumer_figures(res, f"pinned: consumer, {pinned['workers']} workers", pinned["consumer"], pin_copy,
                          min(c[0] for c in pinned["copy_cpu"]), pin_backend)
    res.details = {"events": n, "event_bytes_avg": _avg_bytes(events), "raw_copy_text_runs": copy_text,
                   "raw_copy_binary_runs": copy_binary, "baseline": copy_rate,
                   "raw_copy_binary_cpu_us_per_row": copy_cpu,
                   "executemany_upsert": upsert_rate, "sink_only": sink_rate, "consumer": consumer,
                   "pinned": pinned}
    return res


def _consumer_figures(res: BenchResult, label: str, c: dict[str, Any], copy_rate: float, db_copy: float,
                      backend_copy: float) -> None:
    res.add(label, c["rate"], "events/s")
    res.add(f"{label} / raw COPY", 100 * c["rate"] / copy_rate, "%").check(">=", 80.0)
    for who, key in (("workers", "cpu_us_per_event"), ("database", "db_cpu_us_per_event"),
                     ("database backends", "backend_cpu_us_per_event"), ("broker", "broker_cpu_us_per_event")):
        if c.get(key) is not None:
            fig = res.add(f"{label}: CPU per event, {who}", c[key], "µs")
            if who == "workers":
                fig.check("<=", 12.0)
    if c.get("backend_cpu_us_per_event") and backend_copy:
        res.add(f"{label}: backend CPU per row / raw COPY's", c["backend_cpu_us_per_event"] / backend_copy, "x",
                note="the PostgreSQL backends serving the workers' connections").check("<=", 1.15)
    if c.get("db_cpu_us_per_event") and db_copy:
        res.add(f"{label}: database CPU per row / raw COPY's", c["db_cpu_us_per_event"] / db_copy, "x",
                note="every PostgreSQL process (autovacuum, WAL writer, checkpointer included)")


def _pinned_pair(ctx: BenchContext, topic: str, n: int, rows: list[tuple[Any, ...]], columns: tuple[str, ...],
                 types: list[str]) -> dict[str, Any] | None:
    """Raw COPY and the consumer (2 workers) with PostgreSQL on a core of its own."""
    pin = Pinning(ctx.stack)
    if not pin.available:
        return None
    copy_cpu: list[tuple[float, float]] = []
    pin.apply()
    try:
        copies = [_raw_copy(ctx, rows, columns, types, copy_cpu)]
        consumer = _consume(ctx, topic, n, 2, pin=pin)
        copies.append(_raw_copy(ctx, rows, columns, types, copy_cpu))
    finally:
        pin.undo()
    return {"how": pin.describe(), "copy": copies, "copy_cpu": copy_cpu, "workers": 2, "consumer": consumer}


def _runs(rates: list[float]) -> str:
    return ", ".join(f"{r:,.0f}" for r in rates)


def _column_types(ctx: BenchContext, columns: tuple[str, ...]) -> list[str]:
    import psycopg

    url = ctx.new_database("types")
    try:
        with psycopg.connect(url) as conn:
            found = dict(conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'training_predictions'::regclass AND attnum > 0").fetchall())
    finally:
        ctx.drop_database(url)
    return [found[c] for c in columns]


def _sink_only(ctx: BenchContext, topic: str, events: list, batch: int = 2000) -> float:
    from predstream.consumer.sink import IngestRecord, PostgresSink

    records = [IngestRecord(ev, topic, i % 6, i // 6) for i, ev in enumerate(events)]
    url = ctx.new_database("sinkonly")
    try:
        with PostgresSink(url) as sink:
            sink.ping()
            t0 = time.perf_counter()
            for start in range(0, len(records), batch):
                sink.write(records[start:start + batch])
            seconds = time.perf_counter() - t0
        assert count_rows(url) == len(records)
    finally:
        ctx.drop_database(url)
    return len(records) / seconds


def _avg_bytes(events: list) -> float:
    sample = events[:: max(1, len(events) // 200)]
    return sum(len((e.prompt or "").encode()) + len(e.prediction.encode()) for e in sample) / len(sample)


def _row(ev: Any, topic: str, i: int) -> tuple[Any, ...]:
    """The row the consumer writes for ``ev`` (``UPSERT_COLUMNS`` + created_at, ingested_at)."""
    from predstream.consumer.sink import IngestRecord, row_values

    return (*row_values(IngestRecord(ev, topic, i % 6, i // 6)), ev.produced_at, ev.produced_at)


def _raw_copy(ctx: BenchContext, rows: list[tuple[Any, ...]], columns: tuple[str, ...], types: list[str] | None = None,
              cpu: list[tuple[float, float]] | None = None) -> float:
    """Rows per second of one COPY (text, or binary when ``types`` are given) and its commit.

    Appends (the database server's, the COPY backend's) CPU time per row (µs) to ``cpu`` when given."""
    import psycopg

    url = ctx.new_database("copy")
    sql = f"COPY training_predictions ({', '.join(columns)}) FROM STDIN" + (" (FORMAT BINARY)" if types else "")
    try:
        with psycopg.connect(url) as conn:
            backend = [conn.info.backend_pid]
            db0, be0 = server_cpu(ctx.stack.postgres_pid()), backend_cpu(backend)
            t0 = time.perf_counter()
            with conn.cursor() as cur, cur.copy(sql) as copy:
                if types:
                    copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            seconds = time.perf_counter() - t0
            db1, be1 = server_cpu(ctx.stack.postgres_pid()), backend_cpu(backend)
        assert count_rows(url) == len(rows)
    finally:
        ctx.drop_database(url)
    if cpu is not None and db0 is not None and db1 is not None:
        cpu.append(((db1 - db0) / len(rows) * 1e6, cpu_between(be0, be1) / len(rows) * 1e6))
    return len(rows) / seconds


def _executemany_upsert(ctx: BenchContext, rows: list[tuple], columns: tuple[str, ...], batch: int = 2000) -> float:
    import psycopg

    from predstream.consumer.sink import NEWER_WHERE

    sql = (
        f"INSERT INTO training_predictions AS t ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        "ON CONFLICT (event_id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "event_id")
        + f" WHERE {NEWER_WHERE}"
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


def _consume(ctx: BenchContext, topic: str, n: int, workers: int, pin: Pinning | None = None) -> dict[str, Any]:
    import psycopg

    from predstream.consumer import run_worker_processes

    url = ctx.new_database(f"sink{workers}")
    settings = ctx.consumer_settings(topic, url)
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def _run() -> None:
        if pin is not None:
            pin.pin_thread()  # the worker processes it spawns inherit it
        try:
            outcome["rc"] = run_worker_processes(settings, workers, stop_event=stop)
        except BaseException as exc:
            outcome["rc"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=_run, name=f"bench-workers-{workers}", daemon=True)
    pg, broker = ctx.stack.postgres_pid, ctx.stack.broker_pid
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            thread.start()
            wait_for(lambda: _inserted_so_far(conn) > 0 or "rc" in outcome, 120, 0.01, "the first row")
            first = time.perf_counter()
            cpu_first = children_cpu(exclude={broker, pg()})
            db_first, broker_first = server_cpu(pg()), server_cpu(broker, children=False)
            be_first = backend_cpu(backend_pids(conn, _APP))
            rows_first = _inserted_so_far(conn)
            wait_for(lambda: _inserted_so_far(conn) >= n or "rc" in outcome, 1200, 0.05, f"{n} rows inserted")
            wait_for(lambda: conn.execute("SELECT count(*) FROM training_predictions").fetchone()[0] >= n
                     or "rc" in outcome, 120, 0.02, f"{n} rows committed")
            done = time.perf_counter()
            cpu_done = children_cpu(exclude={broker, pg()})
            db_done, broker_done = server_cpu(pg()), server_cpu(broker, children=False)
            be_done = backend_cpu(backend_pids(conn, _APP))
            counted = max(1, n - rows_first)
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

    def per_event(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else (b - a) / counted * 1e6

    return {"rate": n / (done - first), "seconds": done - first, "startup_s": first - started,
            "cpu_us_per_event": per_event(cpu_first, cpu_done), "db_cpu_us_per_event": per_event(db_first, db_done),
            "backend_cpu_us_per_event": cpu_between(be_first, be_done) / counted * 1e6 if be_done else None,
            "broker_cpu_us_per_event": per_event(broker_first, broker_done)}
