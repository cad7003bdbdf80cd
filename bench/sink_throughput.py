"""Benchmark 2: events per second from the topic to committed rows.

The topic holds ``size.sink_events`` realistic events (~1 KB of prompt and prediction
each, 6 partitions), published before the clocks start. On the same PostgreSQL, each into
its own fresh, migrated database:

* **raw COPY** — the same rows (the columns the consumer writes), built in memory before
  the clock starts, ``COPY``-ed straight into ``training_predictions`` in one transaction,
  in text format and in binary format (typed: cheaper for client and server alike): the
  fastest way those rows get into that table, with its indexes. Each is run before and
  after the consumers; the fastest run of all is the baseline (the strict choice).
* **executemany upsert** — the same rows as ``INSERT ... ON CONFLICT (event_id) DO UPDATE``
  through ``executemany``, one transaction per 2,000 rows: the obvious hand-written writer.
* **consumer, N workers** — ``run_worker_processes`` (what ``predstream consume
  --workers N`` runs), default settings, a fresh consumer group reading the topic from the
  start: poll, decode, validate, COPY to staging, upsert, commit offsets. Its clock runs
  from the first row written to the last row committed (the group join before it, about
  3 s, is reported apart as ``start-up``). The CPU time the worker processes, the
  database server and the broker spend per event over that window is read with ``psutil``.
  On a machine where all of them share few cores, the sum bounds the rate; the database's
  share, set beside raw COPY's, gives the rate where the database is the limit (workers
  on their own cores, as in production).
* **sink only** — :class:`~predstream.consumer.sink.PostgresSink` writing the events, already decoded,
  in batches of 2,000: the database side of the consumer alone (its COPY fast path, since
  every event is new).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ._common import BenchContext, BenchResult, count_rows, wait_for

NAME = "sink_throughput"
TITLE = "2. Sink throughput: topic -> committed rows"

_EXTRA = ("created_at", "ingested_at")


def run(ctx: BenchContext) -> BenchResult:
    from predstream.consumer.sink import UPSERT_COLUMNS

    res = BenchResult(NAME, TITLE)
    topic, events = ctx.loaded_topic()
    n = len(events)
    rows = [_row(ev, topic, i) for i, ev in enumerate(events)]
    columns = (*UPSERT_COLUMNS, *_EXTRA)

    types = _column_types(ctx, columns)
    copy_cpu: list[float] = []
    copy_text = [_raw_copy(ctx, rows, columns)]
    copy_binary = [_raw_copy(ctx, rows, columns, types, copy_cpu)]
    upsert_rate = _executemany_upsert(ctx, rows, columns)
    sink_rate = _sink_only(ctx, topic, events)
    consumer: dict[int, dict[str, float]] = {}
    for workers in ctx.size.worker_counts:
        consumer[workers] = _consume(ctx, topic, n, workers)
    copy_text.append(_raw_copy(ctx, rows, columns))
    copy_binary.append(_raw_copy(ctx, rows, columns, types, copy_cpu))
    copy_rate = max(copy_text + copy_binary)
    ctx.remember("raw_copy_rate", copy_rate)

    res.add("raw COPY, text", max(copy_text), "events/s", note=f"runs: {_runs(copy_text)}")
    res.add("raw COPY, binary", max(copy_binary), "events/s", note=f"runs: {_runs(copy_binary)}")
    res.add("executemany upsert", upsert_rate, "events/s")
    res.add("sink only (decoded events)", sink_rate, "events/s")
    res.add("sink only / raw COPY", 100 * sink_rate / copy_rate, "%")
    for workers, c in consumer.items():
        label = f"consumer, {workers} worker{'s' if workers > 1 else ''}"
        res.add(label, c["rate"], "events/s")
        res.add(f"{label} / raw COPY", 100 * c["rate"] / copy_rate, "%").check(">=", 80.0)
        for who, key in (("workers", "cpu_us_per_event"), ("database", "db_cpu_us_per_event"),
                         ("broker", "broker_cpu_us_per_event")):
            if c[key] is not None:
                res.add(f"{label}: CPU per event, {who}", c[key], "µs")
    db_consumer = [c["db_cpu_us_per_event"] for c in consumer.values() if c.get("db_cpu_us_per_event")]
    if copy_cpu and db_consumer:
        db_copy = min(copy_cpu)
        res.add("raw COPY, binary: database CPU per row", db_copy, "µs")
        db_consumer = min(db_consumer)
        res.add("database CPU per row, raw COPY / consumer", 100 * db_copy / db_consumer, "%",
                note="the consumer's rate where the database is the limit (workers on their own cores)")
    best = max(consumer.values(), key=lambda c: c["rate"])
    res.add("consumer (best) / executemany upsert", best["rate"] / upsert_rate, "x")
    res.add("consumer start-up (group join to first row)", min(c["startup_s"] for c in consumer.values()), "s")
    res.details = {"events": n, "event_bytes_avg": _avg_bytes(events), "raw_copy_text_runs": copy_text,
                   "raw_copy_binary_runs": copy_binary, "baseline": copy_rate,
                   "raw_copy_binary_db_cpu_us_per_row": copy_cpu,
                   "executemany_upsert": upsert_rate, "sink_only": sink_rate, "consumer": consumer}
    return res


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


def _raw_copy(ctx: BenchContext, rows: list[tuple], columns: tuple[str, ...], types: list[str] | None = None,
              cpu: list[float] | None = None) -> float:
    """Rows per second of one COPY (text, or binary when ``types`` are given) and its commit.

    Appends the database server's CPU time per row (µs) to ``cpu`` when given."""
    import psycopg

    url = ctx.new_database("copy")
    sql = f"COPY training_predictions ({', '.join(columns)}) FROM STDIN" + (" (FORMAT BINARY)" if types else "")
    try:
        with psycopg.connect(url) as conn:
            db0 = _server_cpu(ctx.stack.postgres_pid())
            t0 = time.perf_counter()
            with conn.cursor() as cur, cur.copy(sql) as copy:
                if types:
                    copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            seconds = time.perf_counter() - t0
            db1 = _server_cpu(ctx.stack.postgres_pid())
        assert count_rows(url) == len(rows)
    finally:
        ctx.drop_database(url)
    if cpu is not None and db0 is not None and db1 is not None:
        cpu.append((db1 - db0) / len(rows) * 1e6)
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


def _consume(ctx: BenchContext, topic: str, n: int, workers: int) -> dict[str, float]:
    import psycopg

    from predstream.consumer import run_worker_processes

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
            cpu_first = _children_cpu()
            db_first = _server_cpu(ctx.stack.postgres_pid())
            broker_first = _server_cpu(ctx.stack.broker_pid, children=False)
            rows_first = _inserted_so_far(conn)
            wait_for(lambda: _inserted_so_far(conn) >= n or "rc" in outcome, 1200, 0.05, f"{n} rows inserted")
            wait_for(lambda: conn.execute("SELECT count(*) FROM training_predictions").fetchone()[0] >= n
                     or "rc" in outcome, 120, 0.02, f"{n} rows committed")
            done = time.perf_counter()
            cpu_done = _children_cpu()
            db_done = _server_cpu(ctx.stack.postgres_pid())
            broker_done = _server_cpu(ctx.stack.broker_pid, children=False)
            counted = max(1, n - rows_first)
            cpu = None if cpu_first is None or cpu_done is None else (cpu_done - cpu_first) / counted
            db = None if db_first is None or db_done is None else (db_done - db_first) / counted
            broker = None if broker_first is None or broker_done is None else (broker_done - broker_first) / counted
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
    return {"rate": n / (done - first), "seconds": done - first, "startup_s": first - started,
            "cpu_us_per_event": None if cpu is None else cpu * 1e6,
            "db_cpu_us_per_event": None if db is None else db * 1e6,
            "broker_cpu_us_per_event": None if broker is None else broker * 1e6}


def _children_cpu() -> float | None:
    """CPU seconds (user + system) of this process's live child processes (the workers)."""
    try:
        import psutil
    except ImportError:
        return None
    return _cpu_of(psutil.Process().children(recursive=True))


def _server_cpu(pid: int | None, children: bool = True) -> float | None:
    """CPU seconds used so far by a server process and (``children``) its child processes:
    the live ones, and the exited ones it has reaped (PostgreSQL runs a process per
    connection)."""
    try:
        import psutil
    except ImportError:
        return None
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        total = _cpu_of([proc])
        if children:
            reaped = proc.cpu_times()
            total += reaped.children_user + reaped.children_system + _cpu_of(proc.children(recursive=True))
        return total
    except psutil.Error:
        return None


def _cpu_of(procs: list) -> float:
    """User + system CPU seconds of ``procs`` (those gone meanwhile count 0)."""
    import psutil

    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total
