"""Benchmark 4: replay the whole topic into an empty database, then once more.

:func:`predstream.consumer.run_replay` reads the topic loaded for the sink benchmark
(``size.sink_events`` events, 6 partitions) from the beginning to the end into a fresh,
migrated database. The rate counts from the call to its return (planning included). The
CPU of the replaying process (this one, librdkafka's threads included) and of PostgreSQL
(every process: the replay writes through two connections) are reported per event. The
second pass over the same database must add no row (every event is already stored, so
each one is "unchanged").
"""

from __future__ import annotations

import time

from ._common import BenchContext, BenchResult, count_rows
from ._cpu import self_cpu, server_cpu

NAME = "replay"
TITLE = "4. Replay into an empty database"


def run(ctx: BenchContext) -> BenchResult:
    from predstream.consumer.replay import run_replay

    res = BenchResult(NAME, TITLE)
    topic, events = ctx.loaded_topic()
    url = ctx.new_database("replay")
    try:
        settings = ctx.consumer_settings(topic, url)
        pg = ctx.stack.postgres_pid()
        db0, cpu0, t0 = server_cpu(pg), self_cpu(), time.perf_counter()
        first = run_replay(settings)  # its own connections (two writers), as `predstream replay` runs
        first_s, cpu1, db1 = time.perf_counter() - t0, self_cpu(), server_cpu(pg)
        rows_after_first = count_rows(url)
        t0 = time.perf_counter()
        second = run_replay(settings)
        second_s = time.perf_counter() - t0
        rows_after_second = count_rows(url)
    finally:
        ctx.drop_database(url)
    rate = first.read / first_s
    res.add("replay rate (first pass)", rate, "events/s")
    copy_rate = ctx.recall("raw_copy_rate")
    if copy_rate:
        res.add("replay / raw COPY (of the sink benchmark)", 100 * rate / copy_rate, "%").check(">=", 70.0)
    res.add("replay (first pass): CPU per event, replaying process", (cpu1 - cpu0) / first.read * 1e6, "µs")
    if db0 is not None and db1 is not None:
        res.add("replay (first pass): CPU per event, database (every PostgreSQL process)",
                (db1 - db0) / first.read * 1e6, "µs")
    res.add("rows stored by the first pass", rows_after_first, "rows",
            note=f"of {len(events)} events").check(">=", len(events), f"= {len(events)}")
    res.add("rows added by the second pass", rows_after_second - rows_after_first, "rows").check("<=", 0, "= 0")
    res.add("second pass rate (all unchanged)", second.read / second_s, "events/s")
    res.details = {"events": len(events), "first": first.summary(), "second": second.summary(),
                   "first_seconds": first_s, "second_seconds": second_s,
                   "second_inserted": second.inserted, "second_updated": second.updated,
                   "second_unchanged": second.unchanged}
    return res
