"""Benchmark 1: what publishing costs the training loop, against the old direct writer.

Measured: the time the TRAINING THREAD is blocked per 1,000 predictions.

* ``publish()`` — the publish path: :meth:`Publisher.publish` on events built before the
  clock starts (the event is built by the callback whatever the transport). Events go in
  bursts of 1,000 (one eval round); before each burst the publisher has sent the previous
  one, as it has between eval rounds of a real run. Each call is timed on its own.
* ``build + publish()`` — the same plus :meth:`PredictionEvent.create` (validation and
  the two sha256 identities), from the generation's plain fields.
* the old writer — per row: build the row tuple, ``INSERT``, ``COMMIT`` on a real
  connection to the same PostgreSQL (one transaction per row), and the same rows as one
  ``executemany`` batch insert per 1,000 rows in one transaction.
* broker down — ``publish()`` on a publisher pointed at a closed port, once it knows the
  broker is unreachable (events go to the local spool, written by the sender thread).

The stack's PostgreSQL runs on loopback with ``fsync=off``: a commit there is far cheaper
than on a durable server across a network, so the ratios to the old writer are
conservative (the old writer looks as fast as it can).

Also reported, without target: the CPU time of the whole process (sender thread,
librdkafka) per 1,000 events, spent off the training thread.
"""

from __future__ import annotations

import time
from typing import Any

from ._common import BenchContext, BenchResult, make_events, median, percentile, wait_for

NAME = "training_cost"
TITLE = "1. Training-side cost per 1,000 predictions"

_BURST = 1000
_OLD_COLUMNS = ("job_id", "epoch", "step", "sample_index", "prompt", "ground_truth", "prediction",
                "prompt_id", "source_index", "sample_source", "sample_source_id")
_OLD_INSERT = (f"INSERT INTO training_predictions ({', '.join(_OLD_COLUMNS)}) "
               f"VALUES ({', '.join(['%s'] * len(_OLD_COLUMNS))})")


def run(ctx: BenchContext) -> BenchResult:
    res = BenchResult(NAME, TITLE)
    size = ctx.size
    events = make_events(size.bursts * _BURST, seed=11)

    up = _publish_timings(ctx, events, broker_up=True)
    down = _publish_timings(ctx, events, broker_up=False)
    build = _build_and_publish_timings(ctx, events)
    old_row, old_batch = _old_writer_timings(ctx, events, size.old_writer_rows, size.batch_inserts)

    publish_per_1000 = median(up["burst_ms"])
    old_per_1000 = median(old_row)
    batch_per_1000 = median(old_batch)
    build_per_1000 = median(build["burst_ms"])

    res.add("publish(): per 1,000 events", publish_per_1000, "ms")
    res.add("old writer, 1 row per transaction: per 1,000", old_per_1000, "ms")
    res.add("old writer, batch insert: per 1,000", batch_per_1000, "ms")
    res.add("publish() / row-per-transaction", 100 * publish_per_1000 / old_per_1000, "%").check("<=", 1.0)
    res.add("publish() / batch insert", 100 * publish_per_1000 / batch_per_1000, "%")
    res.add("publish(): median per event", up["p50_us"], "µs").check("<=", 20.0)
    res.add("publish(): p99 per event", up["p99_us"], "µs")
    res.add("broker down: publish() per 1,000", median(down["burst_ms"]), "ms")
    res.add("broker down / broker up", median(down["burst_ms"]) / publish_per_1000, "x").check("<=", 2.0)
    res.add("build + publish(): median per event", build["p50_us"], "µs")
    res.add("build + publish() / row-per-transaction", 100 * build_per_1000 / old_per_1000, "%")
    res.add("background CPU per 1,000 events (off the training thread)", up["cpu_ms_per_1000"], "ms")
    res.details = {
        "events_per_burst": _BURST,
        "bursts": size.bursts,
        "broker_up": up,
        "broker_down": down,
        "build_and_publish": build,
        "old_writer_row_per_txn_ms_per_1000": old_row,
        "old_writer_batch_ms_per_1000": old_batch,
    }
    return res


def _summary(calls_ns: list[int], bursts: list[list[int]]) -> dict[str, Any]:
    us = [c / 1000 for c in calls_ns]
    return {
        "burst_ms": [sum(b) / 1e6 * _BURST / len(b) for b in bursts],
        "p50_us": percentile(us, 50),
        "p99_us": percentile(us, 99),
        "max_us": max(us),
        "calls": len(us),
    }


def _publish_timings(ctx: BenchContext, events: list, *, broker_up: bool) -> dict[str, Any]:
    from predstream.local import free_port
    from predstream.producer.publisher import Publisher

    topic = ctx.new_topic()
    settings = ctx.producer_settings(topic, flush_timeout_s=60.0 if broker_up else 0.5,
                                     queue_max_messages=1_000_000)
    if not broker_up:
        settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    pub = Publisher(settings, job_id="bench-cost")
    try:
        if not broker_up:  # measure the outage, not the seconds before librdkafka notices it
            wait_for(lambda: not pub.stats().broker_reachable, 30, what="the publisher noticing the broker is down")
        calls: list[int] = []
        bursts: list[list[int]] = []
        clock = time.perf_counter_ns
        publish = pub.publish
        cpu0 = time.process_time()
        for start in range(0, len(events), _BURST):
            wait_for(lambda: pub.stats().pending == 0, 120, 0.005, "the publisher sending the previous burst")
            burst = []
            for event in events[start:start + _BURST]:
                t0 = clock()
                publish(event)
                burst.append(clock() - t0)
            bursts.append(burst)
            calls.extend(burst)
        wait_for(lambda: pub.stats().pending == 0, 120, 0.005, "the publisher sending the last burst")
        cpu = time.process_time() - cpu0
        out = _summary(calls, bursts)
        out["cpu_ms_per_1000"] = cpu * 1000 / len(events) * _BURST  # all threads, the training thread's part included
        stats = pub.stats()
        out["delivered"], out["spooled"], out["dropped"] = stats.delivered, stats.spooled, stats.dropped
    finally:
        pub.close()
    return out


def _build_and_publish_timings(ctx: BenchContext, events: list) -> dict[str, Any]:
    from predstream.producer.publisher import Publisher
    from predstream.schemas.event import PredictionEvent

    # what the callback has in hand after generation: plain fields, no identities yet
    raw = []
    for ev in events:
        fields = ev.model_dump(exclude={"event_id", "prompt_id", "produced_at"}, exclude_none=True)
        fields["job_id"] = "bench-build"
        raw.append(fields)
    topic = ctx.new_topic()
    pub = Publisher(ctx.producer_settings(topic, queue_max_messages=1_000_000), job_id="bench-build")
    try:
        calls: list[int] = []
        bursts: list[list[int]] = []
        clock = time.perf_counter_ns
        create = PredictionEvent.create
        for start in range(0, len(raw), _BURST):
            wait_for(lambda: pub.stats().pending == 0, 120, 0.005, "the publisher sending the previous burst")
            burst = []
            for fields in raw[start:start + _BURST]:
                t0 = clock()
                pub.publish(create(**fields))
                burst.append(clock() - t0)
            bursts.append(burst)
            calls.extend(burst)
        out = _summary(calls, bursts)
    finally:
        pub.close()
    return out


def _old_row(ev: Any) -> tuple[Any, ...]:
    return (ev.job_id, int(ev.epoch), ev.step, ev.sample_index, ev.prompt, ev.ground_truth, ev.prediction,
            ev.prompt_id, ev.source_index, ev.sample_source, ev.sample_source_id)


def _old_writer_timings(ctx: BenchContext, events: list, rows: int, batches: int) -> tuple[list[float], list[float]]:
    """(ms per 1,000 rows one transaction each, ms per 1,000 rows as one batch insert)."""
    import psycopg

    url = ctx.new_database("cost")
    try:
        with psycopg.connect(url) as conn:  # autocommit off, as the old writer ran
            clock = time.perf_counter_ns
            block: list[int] = []
            row_blocks: list[float] = []
            for i, ev in enumerate(events[:rows]):
                t0 = clock()
                conn.execute(_OLD_INSERT, _old_row(ev))
                conn.commit()
                block.append(clock() - t0)
                if len(block) == _BURST or i == rows - 1:
                    row_blocks.append(sum(block) / 1e6 * _BURST / len(block))
                    block = []
            batch_ms: list[float] = []
            for b in range(batches):
                chunk = events[(b * _BURST) % len(events):][:_BURST]
                t0 = clock()
                with conn.cursor() as cur:
                    cur.executemany(_OLD_INSERT, [_old_row(ev) for ev in chunk])
                conn.commit()
                batch_ms.append((clock() - t0) / 1e6 * _BURST / len(chunk))
    finally:
        ctx.drop_database(url)
    return row_blocks, batch_ms
