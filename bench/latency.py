"""Benchmark 3: end-to-end latency, publish -> row visible, at a fixed rate.

One consumer worker process (default settings: batches of up to 2,000 events or 200 ms)
reads a fresh topic; it has joined its group and stored a warm-up event before the clock
starts. The "training" thread then publishes ``size.latency_rate`` events per second
through a real :class:`~predstream.producer.publisher.Publisher`, in ticks of 10 ms, and notes the
wall-clock time of each ``publish()``. A poller thread queries the table every 10 ms for
new rows; a row counts as visible at the START of the first query that returns it (an
upper bound: it became visible at most one poll interval earlier). The figures are the
percentiles of visible - published over all events.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ._common import BenchContext, BenchResult, make_events, percentile, wait_for

NAME = "latency"
TITLE = "3. End-to-end latency: publish -> row visible"

_TICK_S = 0.01
_POLL_S = 0.01


def run(ctx: BenchContext) -> BenchResult:
    import psycopg

    from predstream.consumer import run_worker_processes
    from predstream.producer.publisher import Publisher

    res = BenchResult(NAME, TITLE)
    rate, seconds = ctx.size.latency_rate, ctx.size.latency_seconds
    total = int(rate * seconds)
    warmup, *events = make_events(total + 1, seed=3)
    topic = ctx.new_topic()
    url = ctx.new_database("lat")
    settings = ctx.consumer_settings(topic, url)
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def consume() -> None:
        try:
            outcome["rc"] = run_worker_processes(settings, 1, stop_event=stop)
        except BaseException as exc:
            outcome["rc"] = f"{type(exc).__name__}: {exc}"

    def arrived(n: int) -> bool:
        if "rc" in outcome:
            raise RuntimeError(f"the consumer worker exited early ({outcome['rc']})")
        return len(visible) >= n

    workers = threading.Thread(target=consume, name="bench-latency-worker", daemon=True)
    published: dict[str, float] = {}
    visible: dict[str, float] = {}
    poll_done = threading.Event()

    def poll() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            last_id = 0
            while not poll_done.is_set():
                t = time.time()
                rows = conn.execute("SELECT id, event_id FROM training_predictions WHERE id > %s ORDER BY id",
                                    (last_id,)).fetchall()
                for row_id, event_id in rows:
                    visible.setdefault(event_id, t)
                    last_id = max(last_id, row_id)
                time.sleep(_POLL_S)

    poller = threading.Thread(target=poll, name="bench-latency-poll", daemon=True)
    pub = Publisher(ctx.producer_settings(topic), job_id="bench-latency")
    try:
        workers.start()
        poller.start()
        pub.publish(warmup)
        wait_for(lambda: arrived(1), 120, 0.05, "the warm-up event to arrive")
        per_tick = rate * _TICK_S
        start = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - start) / _TICK_S * per_tick) + int(per_tick))
            while sent < due:
                ev = events[sent]
                published[ev.event_id] = time.time()
                pub.publish(ev)
                sent += 1
            time.sleep(max(0.0, start + (sent / per_tick) * _TICK_S - time.perf_counter()))
        send_seconds = time.perf_counter() - start
        wait_for(lambda: arrived(total + 1), 60, 0.05, "every event to become visible")
    finally:
        poll_done.set()
        pub.close()
        stop.set()
        workers.join(60)
        poller.join(10)
        ctx.drop_database(url)
    lat_ms = [(visible[e] - t) * 1000 for e, t in published.items() if e in visible]
    achieved = total / send_seconds
    res.add("publish rate achieved", achieved, "events/s")
    res.add("latency p50", percentile(lat_ms, 50), "ms")
    res.add("latency p99", percentile(lat_ms, 99), "ms").check("<=", 500.0)
    res.add("latency max", max(lat_ms), "ms")
    res.details = {"events": total, "rate_target": rate, "seconds": seconds, "poll_interval_ms": _POLL_S * 1000,
                   "p90_ms": percentile(lat_ms, 90), "p999_ms": percentile(lat_ms, 99.9),
                   "consumer": {"batch_size": settings.batch_size, "batch_max_wait_ms": settings.batch_max_wait_ms}}
    return res
