"""Journeys of the event contract (issue 11, items 1-3), through the public surface only:
raw bytes on the topic, the Trainer, the ``predstream`` CLI; checked by what a user sees
(rows, dead letters, exit codes, messages)."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta

import psycopg
import pytest
from typer.testing import CliRunner

from predstream.cli import app
from predstream.schemas.codec import SCHEMA_VERSIONS
from support import make_event, wait_for
from support.consumer_kit import count_rows, produce, start_cli_consumer
from support.contract_kit import avro_package_frame, frame_0_1, record_0_1

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _rows(url: str, sql: str, *args):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def _stop(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def test_frames_from_another_avro_producer_and_from_0_1_are_stored_and_a_forged_identity_is_dead_lettered(
        consumer_settings, tmp_path):
    """A spec-following producer (the official avro package) and a 0.1 producer put raw bytes on
    the topic; so does someone reusing the first event's event_id from another job, later."""
    spec = make_event(1, job="other-language", prediction="spec")
    old = record_0_1(job_id="job-0.1", prompt="1+1=", prediction="2")
    forged = {**make_event(1, job="intruder").to_avro(), "event_id": spec.event_id, "prediction": "taken",
              "produced_at": spec.produced_at + timedelta(days=1)}
    produce(consumer_settings.kafka_bootstrap, consumer_settings.topic, [
        (spec.prompt_id.encode(), avro_package_frame(spec.to_avro(), SCHEMA_VERSIONS[-1]), None),
        (old["prompt_id"].encode(), frame_0_1(old), None),
        (b"intruder", avro_package_frame(forged, SCHEMA_VERSIONS[-1]), None),
    ])
    proc = start_cli_consumer(consumer_settings, log_path=tmp_path / "consume.log")
    try:
        wait_for(lambda: count_rows(consumer_settings.database_url) >= 2, 90, "two rows")
        listing = wait_for(lambda: (r := CliRunner().invoke(app, [
            "dlq", "list", "--format", "json", "--topic", consumer_settings.topic,
            "--bootstrap",
            consumer_settings.kafka_bootstrap])).exit_code == 0 and "identity-mismatch" in r.output and r,
            60, "the dead letter")
    finally:
        assert _stop(proc) == 0
    (letter,) = json.loads(listing.output)
    assert letter["reason"] == "identity-mismatch" and letter["error"].startswith(f"event_id {spec.event_id[:12]}...")
    assert sorted(_rows(consumer_settings.database_url, "SELECT job_id, prediction FROM training_predictions")) == [
        ("job-0.1", "2"), ("other-language", "spec")]


def test_backfill_refuses_an_exported_row_whose_prompt_id_is_not_its_prompts(database_url, tmp_path):
    export = tmp_path / "old-rows.jsonl"
    rows = [
        {"job_id": "legacy", "step": 5, "sample_index": 0, "prompt": "2+2=", "prediction": "4",
         "created_at": "2026-01-01T00:00:00Z"},
        {"job_id": "legacy", "step": 5, "sample_index": 1, "prompt": "3+3=", "prediction": "6",
         "created_at": "2026-01-01T00:00:00Z", "prompt_id": "0" * 64},
    ]
    export.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["backfill", str(export), "--database-url", database_url])
    assert result.exit_code == 1
    assert f"{export}:line 2: prompt_id 000000000000... does not match" in result.output
    assert "(identity-mismatch)" in result.output and "inserted 1" in result.output
    assert _rows(database_url, "SELECT prompt FROM training_predictions") == [("2+2=",)]


class _ClockBehind(datetime):
    """The resumed run's host: its clock is a day behind the first host's."""

    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return datetime.now(tz) - timedelta(days=1)


@pytest.mark.train
def test_a_job_resumed_on_a_host_whose_clock_is_behind_replaces_its_first_attempts_rows(
        producer_settings, consumer_settings, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from transformers import Trainer, TrainingArguments

    from predstream.producer import TrainingPredictionsCallback
    from predstream.tinymodel import TokenizedTask, addition_rows, build_model, build_tokenizer, collate

    out = tmp_path / "run"

    def train(resume_from=None) -> TrainingPredictionsCallback:
        tok = build_tokenizer()
        callback = TrainingPredictionsCallback(
            dataset=addition_rows(40, seed=3), dataset_id="adds", n_samples=4, seed=1, every_n_steps=10,
            on_evaluate=False, max_new_tokens=3, settings=producer_settings, raise_errors=True)
        args = TrainingArguments(
            output_dir=str(out), max_steps=20, per_device_train_batch_size=16, learning_rate=3e-3,
            save_strategy="steps", save_steps=10, eval_strategy="no", logging_strategy="no", report_to="none",
            use_cpu=True, remove_unused_columns=False, dataloader_num_workers=0, seed=0)
        Trainer(model=build_model(tok, seed=0), args=args, train_dataset=TokenizedTask(addition_rows(400, seed=1), tok),
                data_collator=lambda b: collate(b, tok.pad_token_id), processing_class=tok,
                callbacks=[callback]).train(resume_from_checkpoint=resume_from)
        assert callback.last_report.delivered == 4 * (2 if resume_from is None else 1)
        return callback

    url = consumer_settings.database_url
    proc = start_cli_consumer(consumer_settings, log_path=tmp_path / "consume.log")
    try:
        first = train()
        wait_for(lambda: count_rows(url) == 8, 90, "the first attempt's 8 rows (steps 10 and 20)")
        before = dict(_rows(url, "SELECT event_id, produced_at FROM training_predictions WHERE step = 20"))

        monkeypatch.setattr("predstream.schemas.event.datetime", _ClockBehind)
        resumed = train(resume_from=str(out / "checkpoint-10"))
        assert (resumed.job_id, resumed.attempt, first.attempt) == (first.job_id, 1, 0)
        wait_for(lambda: count_rows(url, "attempt = 1") == 4, 90, "step 20 replaced by attempt 1")
    finally:
        assert _stop(proc) == 0
    after = _rows(url, "SELECT event_id, produced_at, attempt FROM training_predictions WHERE step = 20")
    assert {e for e, _, _ in after} == set(before) and count_rows(url) == 8
    assert all(a == 1 and produced < before[e] for e, produced, a in after)  # earlier clock, still newer
    assert json.loads((out / "predstream-job.json").read_text())["attempt"] == 1

    # the first attempt's events, replayed, change nothing
    env = {"PREDSTREAM_KAFKA_BOOTSTRAP": consumer_settings.kafka_bootstrap}
    replayed = CliRunner().invoke(app, ["replay", "--topic", consumer_settings.topic, "--database-url", url,
                                        "--no-progress"], env=env)
    assert replayed.exit_code == 0, replayed.output
    assert "read 12: inserted 0, updated 0, unchanged 12" in replayed.output
    assert count_rows(url, "attempt = 1 AND step = 20") == 4
