"""The broker fails: it hangs while the consumer works through a backlog, it restarts under a
running consumer, and it goes away in the middle of a training run.

These tests run their own broker (the suite's shared one stays up) and the suite's Postgres.
The embedded broker keeps topics in memory: a restart loses them, so the tests recreate the
topics and count only what the broker could still hold (what was stored before the restart,
and everything published after it). Every case ends with exactly the expected rows.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from support import make_events, wait_for
from support.fault_kit import audit, consumer_process, frames, produce_fast, row_count, stop

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]


def _report(name: str, **numbers) -> None:
    print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


@pytest.fixture
def broker(tmp_path):
    """A private broker for this test (topics ``t`` with 6 partitions and ``t.dlq``)."""
    from predstream.local import LocalStack, create_topics

    b = LocalStack(tmp_path / "broker")
    b.home.mkdir(parents=True, exist_ok=True)
    b.start_broker()
    b.topic = "t." + uuid.uuid4().hex[:8]
    b.create_topics = lambda: create_topics(b.bootstrap, {b.topic: 6, b.topic + ".dlq": 3})
    b.create_topics()
    yield b
    b.stop_broker()


@pytest.fixture
def settings_for(consumer_settings):
    def make(broker):
        return consumer_settings.model_copy(update={
            "kafka_bootstrap": broker.bootstrap, "topic": broker.topic, "session_timeout_ms": 1000,
            "batch_size": 500, "batch_max_wait_ms": 100, "db_max_backoff_s": 1.0,
        })
    return make


def test_a_broker_that_hangs_mid_backlog_and_one_that_restarts_lose_nothing_stored(broker, settings_for, database_url,
                                                                                   tmp_path):
    settings = settings_for(broker)
    t0 = time.monotonic()
    backlog = make_events(20_000, job="broker-hang")
    after = make_events(3_000, job="broker-restart")
    produce_fast(broker.bootstrap, broker.topic, frames(backlog))
    log = tmp_path / "consume.log"
    worker = consumer_process(settings, log)
    try:
        # 1. The broker freezes (SIGSTOP) while the worker is mid-backlog, for 4 session timeouts.
        wait_for(lambda: row_count(database_url) >= 2_000, 60, "the backlog under way", every=0.02)
        os.kill(broker.broker_pid, signal.SIGSTOP)
        frozen_at = row_count(database_url)
        time.sleep(4.0)
        os.kill(broker.broker_pid, signal.SIGCONT)
        assert worker.poll() is None, "the worker died while the broker hung"
        wait_for(lambda: row_count(database_url) >= len(backlog), 120, "the whole backlog")
        # 2. The broker is stopped and comes back empty; the worker keeps running and takes new events.
        broker.stop_broker()
        time.sleep(3.0)
        assert worker.poll() is None, "the worker died with the broker"
        broker.start_broker()
        broker.create_topics()
        time.sleep(3.0)  # the worker finds the broker again and rejoins its (new) group
        produce_fast(broker.bootstrap, broker.topic, frames(after))
        wait_for(lambda: row_count(database_url) >= len(backlog) + len(after), 60, "the events sent after the restart")
        time.sleep(1.0)
    finally:
        code = stop(worker)
    text = log.read_text()
    result = audit(database_url, (e.event_id for e in backlog + after))
    expected = len(backlog) + len(after)
    _report("broker hang + restart while consuming", rows_when_frozen=frozen_at, rows=result.rows,
            distinct=result.distinct, missing=result.missing, unexpected=result.unexpected,
            total_s=round(time.monotonic() - t0, 1))
    assert code == 0, text[-3000:]
    assert frozen_at < len(backlog), "the backlog was stored before the broker froze"
    assert (result.rows, result.distinct, result.missing, result.unexpected) == (expected, expected, 0, 0), text[-3000:]
    assert "dead-lettered" not in text


@pytest.mark.train
def test_the_broker_stopped_while_training_loses_no_prediction(broker, settings_for, database_url, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from predstream.producer import Publisher, TrainingPredictionsCallback
    from predstream.producer.settings import ProducerSettings
    from predstream.tinymodel import TokenizedTask, addition_rows, build_model, build_tokenizer, collate

    n_samples, every, max_steps, down_at, up_at = 8, 4, 40, 10, 26
    settings = settings_for(broker)
    producer_settings = ProducerSettings(kafka_bootstrap=broker.bootstrap, topic=broker.topic,
                                         spool_dir=tmp_path / "spool", message_timeout_ms=3000, flush_timeout_s=30)
    publisher = Publisher(producer_settings, job_id="broker-down")
    recorded = TrainingPredictionsCallback(dataset=addition_rows(40, seed=3), n_samples=n_samples, seed=4,
                                           every_n_steps=every, on_evaluate=False, max_new_tokens=4, batch_size=8,
                                           job_id="broker-down", publisher=publisher, raise_errors=True)
    step_times: dict[int, float] = {}

    class BrokerFault(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == down_at:
                # what the broker took so far is stored; then the broker goes away
                wait_for(lambda: publisher.stats().delivered == publisher.stats().published, 30, "deliveries")
                wait_for(lambda: row_count(database_url) == publisher.stats().delivered, 60, "rows so far")
                broker.stop_broker()
            elif state.global_step == up_at:
                broker.start_broker()
                broker.create_topics()
            step_times[state.global_step] = time.monotonic()  # after this hook's own work

    tok = build_tokenizer()
    trainer = Trainer(
        model=build_model(tok, seed=0),
        args=TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=max_steps, per_device_train_batch_size=16,
                               learning_rate=3e-3, eval_strategy="no", save_strategy="no", logging_strategy="no",
                               report_to="none", use_cpu=True, remove_unused_columns=False, seed=0),
        train_dataset=TokenizedTask(addition_rows(1000, seed=1), tok),
        data_collator=lambda batch: collate(batch, tok.pad_token_id),
        processing_class=tok,
        callbacks=[recorded, BrokerFault()],  # recorded first: its step-10 events exist when the broker goes
    )
    log = tmp_path / "consume.log"
    worker = consumer_process(settings, log)
    t0 = time.monotonic()
    try:
        trainer.train()
        report = publisher.close(timeout=30)
        stats = publisher.stats()
        expected = n_samples * (max_steps // every)
        wait_for(lambda: row_count(database_url) >= expected, 90, f"{expected} rows")
        time.sleep(1.0)
    finally:
        publisher.close(timeout=1)
        code = stop(worker)
    # The events of each recorded step, by identity: what the callback produced.
    import psycopg

    with psycopg.connect(database_url) as conn:
        per_step = dict(conn.execute("SELECT step, count(*) FROM training_predictions"
                                     " GROUP BY step ORDER BY step").fetchall())
        rows, distinct = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM training_predictions").fetchone()
    outage_steps = [s for s in range(down_at + 1, up_at) if s in step_times and s - 1 in step_times]
    slowest = max(step_times[s] - step_times[s - 1] for s in outage_steps)
    # a step while the broker was up, recording ones included: on a busy machine steps are
    # slow anyway; waiting for the broker would add its timeout (3 s) to one of them
    normal = max(step_times[s] - step_times[s - 1] for s in range(2, down_at)
                 if s in step_times and s - 1 in step_times)
    _report("broker stopped while training", published=stats.published, delivered=report.delivered,
            spooled=report.spooled, dropped=report.dropped, resent_from_spool=stats.resent, rows=rows,
            distinct=distinct, per_step=per_step, slowest_step_while_down_s=round(slowest, 3),
            total_s=round(time.monotonic() - t0, 1))
    assert code == 0, log.read_text()[-3000:]
    assert stats.published == expected and report.dropped == 0 and report.pending == 0
    assert report.spooled > 0 and stats.resent > 0, "the outage was not noticed"
    assert slowest < max(2.5, 2 * normal), f"training waited for the broker ({slowest:.2f} s; {normal:.2f} s before)"
    assert (rows, distinct) == (expected, expected)
    assert per_step == {s: n_samples for s in range(every, max_steps + 1, every)}
