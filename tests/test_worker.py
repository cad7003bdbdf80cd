"""The consumer worker against the real broker and Postgres: exactly N rows, whatever happens."""

from __future__ import annotations

import logging
import signal
import time
from datetime import timedelta

import psycopg
import pytest

from predstream.consumer.metrics import ConsumerMetrics, check_health
from support import T0, make_event, wait_for
from support.consumer_kit import count_rows, produce_events, rows_reach, start_cli_consumer, worker_thread

pytestmark = pytest.mark.integration


def _value(metrics: ConsumerMetrics, name: str, labels: dict | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_n_events_make_n_rows_and_the_same_n_again_are_skipped_as_duplicates(consumer_settings, kafka_bootstrap,
                                                                             database_url):
    settings = consumer_settings.model_copy(update={"batch_size": 100})
    events = [make_event(i) for i in range(400)]
    produce_events(kafka_bootstrap, settings.topic, events)
    with worker_thread(settings) as worker:
        wait_for(rows_reach(database_url, 400), 60, "400 rows")
        produce_events(kafka_bootstrap, settings.topic, events)
        wait_for(lambda: _value(worker.metrics, "predstream_duplicates_skipped_total") >= 400, 30, "400 duplicates")
        m = worker.metrics
    assert count_rows(database_url) == 400
    assert _value(m, "predstream_events_consumed_total") == 800
    assert _value(m, "predstream_rows_upserted_total", {"result": "inserted"}) == 400
    assert _value(m, "predstream_rows_upserted_total", {"result": "updated"}) == 0
    assert _value(m, "predstream_duplicates_skipped_total") == 400
    assert _value(m, "predstream_batch_size_count") >= 8  # batches of at most 100


def test_an_older_version_sent_after_a_newer_one_leaves_the_newer_row(consumer_settings, kafka_bootstrap, database_url):
    newer = [make_event(i, prediction=f"new-{i}", produced_at=T0 + timedelta(hours=1)) for i in range(50)]
    older = [make_event(i, prediction=f"old-{i}", produced_at=T0) for i in range(50)]
    produce_events(kafka_bootstrap, consumer_settings.topic, newer)
    with worker_thread(consumer_settings) as worker:
        wait_for(rows_reach(database_url, 50), 60, "50 rows")
        produce_events(kafka_bootstrap, consumer_settings.topic, older)
        wait_for(lambda: _value(worker.metrics, "predstream_events_consumed_total") >= 100, 30, "100 events consumed")
        wait_for(lambda: not worker._buffer, 10, "the batch stored")
    with psycopg.connect(database_url) as conn:
        preds = {r[0] for r in conn.execute("SELECT prediction FROM training_predictions")}
    assert preds == {f"new-{i}" for i in range(50)}


def test_a_single_event_is_stored_within_the_batch_wait(consumer_settings, kafka_bootstrap, database_url):
    settings = consumer_settings.model_copy(update={"batch_size": 1000, "batch_max_wait_ms": 200})
    with worker_thread(settings):
        time.sleep(4)  # joined the group
        produce_events(kafka_bootstrap, settings.topic, [make_event(1)])
        sent = time.monotonic()
        wait_for(rows_reach(database_url, 1), 30, "the row", every=0.05)
        assert time.monotonic() - sent < 5


@pytest.mark.slow
def test_sigterm_exits_0_and_a_restarted_worker_redelivers_nothing_already_stored(consumer_settings, kafka_bootstrap,
                                                                                  database_url, tmp_path):
    events = [make_event(i) for i in range(3000)]
    produce_events(kafka_bootstrap, consumer_settings.topic, events)
    proc = start_cli_consumer(consumer_settings, "--batch-size", "100", log_path=tmp_path / "consume.log")
    try:
        wait_for(rows_reach(database_url, 1), 60, "the first rows")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, (tmp_path / "consume.log").read_text()
    stored = count_rows(database_url)
    settings = consumer_settings.model_copy(update={"batch_size": 500})
    with worker_thread(settings) as worker:
        wait_for(rows_reach(database_url, 3000), 60, "every row")
        wait_for(lambda: not worker._buffer, 10, "the batch stored")
        time.sleep(1)
        consumed = _value(worker.metrics, "predstream_events_consumed_total")
        duplicates = _value(worker.metrics, "predstream_duplicates_skipped_total")
    assert count_rows(database_url) == 3000
    # everything stored before SIGTERM was committed: the restart reads only the rest
    assert (consumed, duplicates) == (3000 - stored, 0), f"{stored} stored before SIGTERM"


def _committed(settings) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.group_id})
    try:
        tps = reader.committed([TopicPartition(settings.topic, p) for p in range(6)], timeout=10)
    finally:
        reader.close()
    return {tp.partition: max(tp.offset, 0) for tp in tps}


@pytest.mark.slow
def test_consume_with_two_workers_forwards_sigterm_and_commits_exactly_what_it_stored(consumer_settings,
                                                                                      kafka_bootstrap, database_url,
                                                                                      tmp_path):
    # (No restart in the same group here: tansu 0.6 wedges a group whose last two members
    # leave in one rebalance; Apache Kafka does not. The offsets are read directly instead.)
    produce_events(kafka_bootstrap, consumer_settings.topic, (make_event(i) for i in range(3000)))
    proc = start_cli_consumer(consumer_settings, "--workers", "2", "--batch-size", "100",
                              log_path=tmp_path / "consume.log")
    try:
        wait_for(rows_reach(database_url, 1), 60, "the first rows")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(40)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "consume.log").read_text()
    assert code == 0, log
    assert log.count("SIGTERM received") == 2 and log.count("stopped:") == 2, log
    with psycopg.connect(database_url) as conn:
        per_partition = dict(conn.execute(
            "SELECT kafka_partition, count(*) FROM training_predictions GROUP BY 1").fetchall())
        top = dict(conn.execute("SELECT kafka_partition, max(kafka_offset) + 1 FROM training_predictions"
                                " GROUP BY 1").fetchall())
    assert per_partition == top, "stored rows are a prefix of each partition"
    committed = _committed(consumer_settings)
    assert {p: o for p, o in committed.items() if o} == per_partition


@pytest.mark.slow
def test_three_workers_share_the_partitions_and_one_killed_mid_batch_loses_nothing(consumer_settings, kafka_bootstrap,
                                                                                   database_url, tmp_path):
    n = 3000
    procs = [
        start_cli_consumer(consumer_settings, "--batch-size", "50", log_path=tmp_path / f"w{i}.log") for i in range(3)
    ]
    try:
        # all three in the group (a worker logs "assigned" once it has partitions: on a busy
        # machine the first join takes longer than the usual 3-5 s)
        wait_for(lambda: all("assigned" in (tmp_path / f"w{i}.log").read_text() for i in range(3)), 60,
                 "all three workers in the group")
        produce_events(kafka_bootstrap, consumer_settings.topic, (make_event(i) for i in range(n)))
        wait_for(lambda: count_rows(database_url) >= n // 10, 60, "a tenth of the rows")
        procs[0].send_signal(signal.SIGKILL)
        assert count_rows(database_url) < n, "too late to kill mid-stream"
        wait_for(rows_reach(database_url, n), 90, f"{n} rows")
        time.sleep(1)
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(30) for p in procs[1:]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = {i: (tmp_path / f"w{i}.log").read_text() for i in range(3)}
    assert codes == [0, 0], logs
    assert count_rows(database_url) == n
    with psycopg.connect(database_url) as conn:
        partitions = conn.execute("SELECT count(DISTINCT kafka_partition) FROM training_predictions").fetchone()[0]
    assert partitions == 6
    assigned = [i for i in range(3) if "assigned" in logs[i]]
    assert assigned == [0, 1, 2], "every worker took part"


@pytest.mark.slow
@pytest.mark.faults
def test_postgres_down_for_10_s_pauses_then_resumes_with_exactly_n_rows(stack, consumer_settings, kafka_bootstrap,
                                                                        database_url, caplog):
    caplog.set_level(logging.INFO, logger="predstream")
    settings = consumer_settings.model_copy(update={"batch_size": 100, "db_max_backoff_s": 2.0, "metrics_port": 0})
    from predstream.consumer.metrics import serve_metrics

    with worker_thread(settings) as worker:
        server = serve_metrics(worker.metrics, worker.health, 0, host="127.0.0.1")
        url = f"http://127.0.0.1:{server.port}/healthz"
        try:
            produce_events(kafka_bootstrap, settings.topic, (make_event(i) for i in range(500)))
            wait_for(rows_reach(database_url, 500), 60, "the first 500 rows")
            assert check_health(url)[0]
            stack.stop_postgres()
            try:
                produce_events(kafka_bootstrap, settings.topic, (make_event(i) for i in range(500, 1000)))
                time.sleep(10)
                healthy, line = check_health(url)
                assert not healthy and '"database": "down"' in line
                assert _value(worker.metrics, "predstream_db_up") == 0
            finally:
                stack.start_postgres()
            wait_for(rows_reach(database_url, 1000), 60, "1000 rows after the database returned")
            wait_for(lambda: check_health(url)[0], 10, "healthy again")
        finally:
            server.close()
    assert count_rows(database_url) == 1000
    down = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    back = [r for r in caplog.records if "database back after" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING, [r.getMessage() for r in down]
    assert len(back) == 1 and back[0].levelno == logging.INFO
    assert "pausing, will retry" in down[0].getMessage() and "resumed" in back[0].getMessage()
    assert not [r for r in caplog.records if "dead-lettered" in r.getMessage()]


@pytest.mark.slow
@pytest.mark.faults
def test_an_unreachable_database_commits_nothing_and_logs_once_without_the_password(stack, consumer_settings,
                                                                                    kafka_bootstrap, database_url,
                                                                                    caplog):
    from predstream.local import free_port

    caplog.set_level(logging.INFO, logger="predstream")
    produce_events(kafka_bootstrap, consumer_settings.topic, (make_event(i) for i in range(100)))
    wrong = consumer_settings.model_copy(update={
        "database_url": f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/x", "db_max_backoff_s": 1.0,
    })
    with worker_thread(wrong) as worker:
        wait_for(lambda: _value(worker.metrics, "predstream_events_consumed_total") == 100, 30, "100 consumed")
        time.sleep(3)  # several retries
        assert worker.health()[0] is False
    down = [r.getMessage() for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(down) == 1 and "hunter2" not in down[0]
    assert not any("hunter2" in r.getMessage() for r in caplog.records)
    assert _value(worker.metrics, "predstream_offset_commits_total") == 0
    assert _value(worker.metrics, "predstream_dead_lettered_total", {"reason": "db-rejected"}) == 0
    # nothing was committed: a worker with the right database stores every event
    with worker_thread(consumer_settings) as fixed:
        wait_for(rows_reach(database_url, 100), 60, "100 rows")
    assert _value(fixed.metrics, "predstream_events_consumed_total") == 100
