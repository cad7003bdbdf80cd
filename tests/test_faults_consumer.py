"""Faults on the consumer side: kill -9 at random points, Postgres restarts, rebalances.

Every case ends with exactly the expected rows, counted by event identity: no event
missing, none unexpected, one row per event id. The numbers these tests print (run with
``-s``) are the ones in ``docs/reliability.md``.

The workers run as ``predstream consume`` processes with ``session.timeout.ms=1000``: a
killed member leaves the group after 1 s, so ten kills fit in about 30 s.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from support import make_events, wait_for
from support.fault_kit import SteadyProducer, audit, consumer_process, frames, produce_fast, row_count, stop

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

STREAM = 50_000
KILLS = 10


def _report(name: str, **numbers) -> None:
    print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


@pytest.fixture
def fast_settings(consumer_settings):
    """Workers that leave the group 1 s after they die and retry the database every ≤1 s."""
    return consumer_settings.model_copy(update={
        "session_timeout_ms": 1000, "batch_size": 1000, "batch_max_wait_ms": 100, "db_max_backoff_s": 1.0,
    })


def test_kill_9_at_random_points_of_a_50k_event_stream_leaves_exactly_50k_rows(fast_settings, kafka_bootstrap,
                                                                               database_url, tmp_path):
    seed = int(os.environ.get("FAULTS_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    t0 = time.monotonic()
    events = make_events(STREAM, job="faults")
    produce_fast(kafka_bootstrap, fast_settings.topic, frames(events))
    produced_s = time.monotonic() - t0
    log = tmp_path / "consume.log"
    after_kill: list[int] = []
    kill_at: list[str] = []
    try:
        for life in range(KILLS):
            proc = consumer_process(fast_settings, log)
            before = row_count(database_url)
            # kill at a random point of this life's share of what is left, so the stream
            # outlasts all the kills however fast the worker is on this machine
            share = max(1, (STREAM - before) // (KILLS - life + 1))
            target = before + rng.randint(1, share)
            try:
                if rng.random() < 0.25:  # during start-up, the group join or the first batch
                    delay = rng.uniform(0.0, 2.5)
                    deadline = time.monotonic() + delay
                    while time.monotonic() < deadline and row_count(database_url) < target:
                        time.sleep(0.01)
                    kill_at.append(f"start+{delay:.2f}s")
                else:  # somewhere in a later batch: decoding, COPY, upsert, DB commit, offset commit
                    wait_for(lambda target=target: row_count(database_url) >= target, 60,
                             "this life's share of the stream", every=0.01)
                    delay = rng.uniform(0.0, 0.05)
                    time.sleep(delay)
                    kill_at.append(f"rows+{delay:.2f}s")
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            after_kill.append(row_count(database_url))
        assert after_kill[-1] < STREAM, f"the stream ended before kill {KILLS}: {after_kill}"
        final = consumer_process(fast_settings, log)
        try:
            wait_for(lambda: row_count(database_url) >= STREAM, 120, f"{STREAM} rows", every=0.2)
            time.sleep(1.0)  # a late duplicate would show now
        finally:
            code = stop(final)
    except BaseException:
        print(log.read_text()[-5000:])
        raise
    result = audit(database_url, (e.event_id for e in events))
    _report(f"kill -9 x{KILLS}", seed=seed, kill_points=kill_at, rows_after_each_kill=after_kill, rows=result.rows,
            distinct=result.distinct, missing=result.missing, unexpected=result.unexpected,
            produce_s=round(produced_s, 1), total_s=round(time.monotonic() - t0, 1))
    assert code == 0, log.read_text()[-3000:]
    assert (result.rows, result.distinct, result.missing, result.unexpected) == (STREAM, STREAM, 0, 0), f"seed {seed}"


def test_postgres_restarted_twice_mid_stream_leaves_exactly_the_streamed_rows(stack, fast_settings, kafka_bootstrap,
                                                                              database_url, tmp_path):
    n = 20_000
    t0 = time.monotonic()
    events = make_events(n, job="pg-restarts")
    log = tmp_path / "consume.log"
    worker = consumer_process(fast_settings, log)
    producer = SteadyProducer(kafka_bootstrap, fast_settings.topic, frames(events), seconds=10)
    at_restart: list[int] = []
    try:
        producer.start()
        for _ in range(2):
            wait_for(lambda: row_count(database_url) > (at_restart[-1] if at_restart else 0) + 1000, 60, "progress")
            at_restart.append(row_count(database_url))
            stack.stop_postgres()
            try:
                time.sleep(2.0)  # the worker keeps polling, commits nothing, retries
                assert worker.poll() is None, "the worker died with the database"
            finally:
                stack.start_postgres()
        producer.finish()
        wait_for(lambda: row_count(database_url) >= n, 120, f"{n} rows")
        time.sleep(1.0)
    finally:
        code = stop(worker)
    text = log.read_text()
    result = audit(database_url, (e.event_id for e in events))
    _report("postgres restarted x2", rows_at_each_restart=at_restart, rows=result.rows, distinct=result.distinct,
            missing=result.missing, unexpected=result.unexpected,
            outage_warnings=text.count("database unavailable"), total_s=round(time.monotonic() - t0, 1))
    assert code == 0, text[-3000:]
    assert at_restart[-1] < n, "the stream ended before the second restart"
    assert (result.rows, result.distinct, result.missing, result.unexpected) == (n, n, 0, 0)
    assert text.count("database unavailable") >= 1 and "database back after" in text
    assert "dead-lettered" not in text  # an outage is never the events' fault


def test_workers_joining_and_leaving_the_group_mid_stream_lose_and_duplicate_nothing(fast_settings, kafka_bootstrap,
                                                                                     database_url, tmp_path):
    """Four workers come and go (clean leaves, a kill -9, late joiners) while 30k events stream in."""
    n = 30_000
    t0 = time.monotonic()
    events = make_events(n, job="rebalances")
    logs = [tmp_path / f"w{i}.log" for i in range(4)]
    procs = {0: consumer_process(fast_settings, logs[0])}
    producer = SteadyProducer(kafka_bootstrap, fast_settings.topic, frames(events), seconds=12)
    codes: dict[int, int] = {}
    try:
        wait_for(lambda: "assigned" in logs[0].read_text(), 30, "worker 0 in the group")
        producer.start()
        wait_for(lambda: row_count(database_url) > 1000, 60, "progress")
        procs[1] = consumer_process(fast_settings, logs[1])  # joins: 0 gives up half
        procs[2] = consumer_process(fast_settings, logs[2])  # joins
        time.sleep(2.5)
        codes[0] = stop(procs[0])  # leaves cleanly: commits its batch, partitions move
        time.sleep(1.5)
        procs[3] = consumer_process(fast_settings, logs[3])  # joins
        time.sleep(2.0)
        os.kill(procs[1].pid, signal.SIGKILL)  # dies: its partitions move after the session timeout
        procs[1].wait(10)
        mid = row_count(database_url)
        producer.finish()
        wait_for(lambda: row_count(database_url) >= n, 120, f"{n} rows")
        time.sleep(1.0)
    finally:
        for i, p in procs.items():
            if i not in codes and i != 1:
                codes[i] = stop(p)
            if p.poll() is None:
                p.kill()
    texts = [p.read_text() for p in logs]
    result = audit(database_url, (e.event_id for e in events))
    assignments = sum(t.count("assigned ") for t in texts)
    _report("rebalances", rows_when_last_worker_died=mid, assignments=assignments, rows=result.rows,
            distinct=result.distinct, missing=result.missing, unexpected=result.unexpected,
            total_s=round(time.monotonic() - t0, 1))
    assert mid < n, "the stream ended before the last rebalance"
    assert codes == {0: 0, 2: 0, 3: 0}, texts
    assert all("assigned " in t for t in texts), "every worker took part"
    assert assignments >= 6
    assert (result.rows, result.distinct, result.missing, result.unexpected) == (n, n, 0, 0)
