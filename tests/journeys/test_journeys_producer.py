"""Journeys of the training side (issue 12, items 2, 3, 4 and 6), through the public surface
only: the ``transformers.Trainer`` with ``TrainingPredictionsCallback``, the ``Publisher`` of
a custom loop, the ``predstream`` CLI, raw SQL as a user would type it, and a schema registry
that goes down and comes back. Each checks what the user sees: rows, counts on the topic,
the message."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from predstream.cli import app  # noqa: E402
from predstream.local import free_port  # noqa: E402
from predstream.producer import Publisher, TrainingPredictionsCallback  # noqa: E402
from predstream.schemas import Decoder, PredictionEvent, PredictionSetError  # noqa: E402
from predstream.tinymodel import TokenizedTask, addition_rows, build_model, build_tokenizer, collate  # noqa: E402
from support import wait_for  # noqa: E402
from support.consumer_kit import count_rows, rows_reach, worker_thread  # noqa: E402
from support.registry_double import RegistryDouble  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.integration, pytest.mark.slow]

_RUNNER = Path(__file__).parent.parent / "support" / "train_then_evaluate.py"


def _trainer(callback, out: Path, *, max_steps: int, eval_steps: int | None = None):
    from transformers import Trainer, TrainingArguments

    tok = build_tokenizer()
    args = TrainingArguments(
        output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=16, per_device_eval_batch_size=16,
        learning_rate=3e-3, eval_strategy="steps" if eval_steps else "no", eval_steps=eval_steps, save_strategy="no",
        logging_strategy="no",
        report_to="none", use_cpu=True, remove_unused_columns=False, dataloader_num_workers=0, seed=0,
        disable_tqdm=True,
    )
    return Trainer(
        model=build_model(tok, seed=0), args=args, processing_class=tok, callbacks=[callback],
        train_dataset=TokenizedTask(addition_rows(200, seed=1), tok),
        eval_dataset=TokenizedTask(addition_rows(16, seed=2), tok),
        data_collator=lambda batch: collate(batch, tok.pad_token_id),
    )


def _on_topic(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list:
    """Every message on ``topic`` once ``expected`` arrived (and a short wait for extra ones)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "journey", "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, -2) for p in parts])
        out: list = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(100, 0.3) if not m.error())
        out.extend(m for m in consumer.consume(100, 0.5) if not m.error())
        return out
    finally:
        consumer.close()


def _cli(*args: str):
    """The CLI in-process; the root logger's handlers it replaces are put back afterwards."""
    root, ours = logging.getLogger(), logging.getLogger("predstream")
    handlers, level, our_level = root.handlers[:], root.level, ours.level
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        root.handlers[:], root.level = handlers, level
        ours.setLevel(our_level)


def _steps(database_url: str) -> dict[int, int]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT step, count(*) FROM training_predictions GROUP BY step").fetchall())


# -- 12.2: train() then evaluate() --------------------------------------------------------


def test_train_then_evaluate_stores_the_final_evaluations_predictions(
    producer_settings, consumer_settings, database_url, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    callback = TrainingPredictionsCallback(dataset=addition_rows(40, seed=3), n_samples=3, max_new_tokens=3,
                                           every_n_steps=3, settings=producer_settings)
    trainer = _trainer(callback, tmp_path / "out", max_steps=4)
    with worker_thread(consumer_settings):
        trainer.train()  # records step 3
        trainer.evaluate()  # the final evaluation, after train end: step 4
        wait_for(rows_reach(database_url, 6), 60, "6 rows")
    assert _steps(database_url) == {3: 3, 4: 3}
    assert "after close" not in caplog.text
    assert "at train end: 3 delivered" in caplog.text and "after train end: 3 delivered" in caplog.text


def test_train_then_evaluate_with_the_broker_down_spools_everything_and_exits_promptly(kafka_bootstrap, topic,
                                                                                       tmp_path):
    spool = tmp_path / "spool"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    env.update(PREDSTREAM_HOME=str(tmp_path / "home"), PREDSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
               PREDSTREAM_SPOOL_DIR=str(spool), PREDSTREAM_FLUSH_TIMEOUT_S="60", PREDSTREAM_SPOOL_AUTO_DRAIN="false")
    proc = subprocess.run([sys.executable, str(_RUNNER), str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=240)
    exited = time.monotonic()
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated_at = float(proc.stdout.split()[-1])  # CLOCK_MONOTONIC: one clock for both processes
    print(f"\n[journey] broker down: exit {exited - evaluated_at:.2f} s after evaluate() returned")
    assert exited - evaluated_at < 20, "the exit waited out the 60 s flush timeout"
    assert "PublisherClosedError" not in proc.stderr

    status = json.loads(_cli("spool", "status", "--json", "--spool-dir", str(spool)).output)
    assert status["records"] == 6  # 3 prompts at step 3 (in training) and at step 4 (evaluate() after it)
    drained = _cli("spool", "drain", "--spool-dir", str(spool), "--bootstrap", kafka_bootstrap, "--topic", topic)
    assert drained.exit_code == 0, drained.output
    decoder = Decoder()
    steps = sorted(decoder.decode(m.value()).step for m in _on_topic(kafka_bootstrap, topic, 6))
    assert steps == [3, 3, 3, 4, 4, 4]


# -- 12.3: a schema registry outage ---------------------------------------------------------


def test_a_registry_outage_spools_and_the_events_arrive_confluent_framed_once_it_answers(
    producer_settings, consumer_settings, database_url, kafka_bootstrap, topic
):
    registry = RegistryDouble().start()
    registry.stop()  # the registry is down when training starts
    settings = producer_settings.model_copy(update={"schema_registry_url": registry.url})
    publisher = Publisher(settings, job_id="registry-journey")
    events = [PredictionEvent.create(job_id="registry-journey", epoch=0.0, step=1, sample_index=i, source_index=i,
                                     prompt=f"{i} + 1 =", ground_truth=str(i + 1), prediction=str(i + 1),
                                     sample_source="dataset", sample_source_id="sums") for i in range(2)]
    try:
        publisher.publish_many(events)
        report = publisher.flush(10)
        assert (report.delivered, report.spooled, report.dropped) == (0, 2, 0)  # 0.1 said: 0, 0, 2

        registry.start()  # back on the same port: the publisher registers the schema and re-sends
        wait_for(lambda: publisher.stats().resent == 2, 30, "the spool re-sent")
        publisher.close(5)
        messages = _on_topic(kafka_bootstrap, topic, 2)
        assert len(messages) == 2 and {m.value()[:1] for m in messages} == {b"\x00"}  # Confluent wire format
        with worker_thread(consumer_settings.model_copy(update={"schema_registry_url": registry.url})):
            wait_for(rows_reach(database_url, 2), 30, "2 rows")
    finally:
        publisher.close(1)
        registry.stop()
    assert count_rows(database_url) == 2
    assert _on_topic(kafka_bootstrap, topic + ".dlq", 0, timeout=1) == []


# -- 12.4: prediction_set="name" through the settings, and a database outage ------------------


def _create_set(tmp_path: Path, database_url: str, name: str = "sums") -> str:
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in addition_rows(20, seed=5)), encoding="utf-8")
    created = _cli("sets", "create", name, "--from", str(data), "--indices", "0,1,2", "--database-url", database_url)
    assert created.exit_code == 0, created.output
    return created.output.split("(")[1].split(",")[0]  # "created set 'sums' (ps_..., 3 items)"


def test_a_prediction_set_by_name_needs_only_the_environment_and_survives_a_database_outage(
    monkeypatch, tmp_path, database_url, kafka_bootstrap, topic, caplog
):
    set_id = _create_set(tmp_path, database_url)
    for var, value in (("PREDSTREAM_DATABASE_URL", database_url), ("PREDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap),
                       ("PREDSTREAM_TOPIC", topic), ("PREDSTREAM_SPOOL_DIR", str(tmp_path / "spool"))):
        monkeypatch.setenv(var, value)

    def train(out: str) -> TrainingPredictionsCallback:
        callback = TrainingPredictionsCallback(prediction_set="sums", max_new_tokens=2)
        _trainer(callback, tmp_path / out, max_steps=2, eval_steps=2).train()
        return callback

    train("run-1")  # no database_url= anywhere: PREDSTREAM_DATABASE_URL is enough
    monkeypatch.setenv("PREDSTREAM_DATABASE_URL", f"postgresql://predstream@127.0.0.1:{free_port()}/gone")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="predstream"):
        train("run-2")  # the database does not answer: the local copy from run 1
    copy_warnings = [r.getMessage() for r in caplog.records if "local copy" in r.getMessage()]
    assert len(copy_warnings) == 1 and "does not answer" in copy_warnings[0] and set_id in copy_warnings[0], caplog.text

    decoded = [Decoder().decode(m.value()) for m in _on_topic(kafka_bootstrap, topic, 6)]
    assert len(decoded) == 6 and len({e.job_id for e in decoded}) == 2
    assert {(e.sample_source, e.sample_source_id) for e in decoded} == {("prediction_set", set_id)}

    monkeypatch.setenv("PREDSTREAM_SPOOL_DIR", str(tmp_path / "fresh-host"))  # no copy there
    with pytest.raises(PredictionSetError) as caught:
        train("run-3")
    text = str(caught.value)
    assert "does not answer" in text and "no local copy" in text and "predstream sets export sums" in text
    assert "gone" in text  # names the database it tried


# -- 12.6: a set never changes ------------------------------------------------------------------


def test_a_created_set_cannot_change_and_an_edited_export_is_refused_at_train_begin(tmp_path, database_url,
                                                                                    producer_settings):
    import psycopg

    set_id = _create_set(tmp_path, database_url)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation, match="immutable"):
            conn.execute("UPDATE prediction_set_items SET ground_truth = 'wrong' WHERE item_index = 0")
    shown = _cli("sets", "show", "sums", "--database-url", database_url)
    assert shown.exit_code == 0 and "wrong" not in shown.output

    export = tmp_path / "sums.json"
    assert _cli("sets", "export", "sums", str(export), "--database-url", database_url).exit_code == 0
    doc = json.loads(export.read_text(encoding="utf-8"))
    doc["items"][0]["ground_truth"] = "wrong"
    export.write_text(json.dumps(doc), encoding="utf-8")
    callback = TrainingPredictionsCallback(prediction_set=str(export), max_new_tokens=2, settings=producer_settings)
    with pytest.raises(PredictionSetError) as caught:
        _trainer(callback, tmp_path / "out", max_steps=1, eval_steps=1).train()
    text = str(caught.value)
    assert str(export) in text and "'sums'" in text and set_id in text and "export the set again" in text

    deleted = _cli("sets", "delete", "sums", "--yes", "--database-url", database_url)
    assert deleted.exit_code == 0, deleted.output
    assert "no prediction sets yet" in _cli("sets", "list", "--database-url", database_url).output
