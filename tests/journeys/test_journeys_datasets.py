"""Journeys with eval datasets, through the public surface only: a ``transformers.Trainer``
with ``TrainingPredictionsCallback`` publishing to the real broker, and the ``predstream
sets create`` command against a real Postgres. Each checks what the user sees: the
warning or error, the events on the topic, the publisher's report, the stored rows.

Bad rows are checked once, at train begin or at ``sets create``: skipped with a warning
naming the file and line, or one clear error. No event is dropped step after step."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("transformers")

from predstream.cli import app  # noqa: E402
from predstream.producer import TrainingPredictionsCallback  # noqa: E402
from predstream.producer.errors import DatasetError  # noqa: E402
from predstream.schemas import MAX_JOB_ID_CHARS  # noqa: E402
from predstream.tinymodel import TokenizedTask, addition_rows, build_model, build_tokenizer, collate  # noqa: E402
from support.consumer_kit import read_events  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.integration, pytest.mark.slow]

N = 4  # samples per run


def _eval_file(path: Path, bad_line: str | None = None, *, rows: int = 8, prefix: bytes = b"") -> Path:
    """``rows`` addition prompts, one per line; ``bad_line`` (raw JSON text) becomes line 3."""
    lines = [json.dumps(r) for r in addition_rows(rows, seed=5)]
    if bad_line is not None:
        lines.insert(2, bad_line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(prefix + ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def _train(tmp_path: Path, dataset, settings, *, max_steps: int = 2, resume: str | None = None,
           out: str = "run", **callback_args):
    from transformers import Trainer, TrainingArguments

    tok = build_tokenizer()
    args = TrainingArguments(
        output_dir=str(tmp_path / out), max_steps=max_steps, per_device_train_batch_size=8,
        eval_strategy="no", save_strategy="steps" if resume is not None else "no", save_steps=2,
        logging_strategy="no", report_to="none", use_cpu=True, remove_unused_columns=False,
        dataloader_num_workers=0, seed=0,
    )
    callback = TrainingPredictionsCallback(
        dataset=dataset, n_samples=N, seed=3, every_n_steps=callback_args.pop("every_n_steps", 1), on_evaluate=False,
        max_new_tokens=2, batch_size=8, settings=settings, **callback_args,
    )
    trainer = Trainer(model=build_model(tok, seed=0), args=args,
                      train_dataset=TokenizedTask(addition_rows(64, seed=1), tok),
                      data_collator=lambda b: collate(b, tok.pad_token_id), processing_class=tok, callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume or None)
    return callback


def _every_step_recorded(callback, events: list, steps: int, caplog) -> None:
    """What the user sees when nothing is lost: N events per step, none dropped."""
    assert len(events) == N * steps, [e.step for e in events]
    assert callback.last_report.dropped == 0 and callback.last_report.delivered == N * steps
    assert "recorded 0 predictions" not in caplog.text
    assert "breaks the event contract and is not sent" not in caplog.text


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


# -- a lone surrogate ----------------------------------------------------------------------


def test_a_lone_surrogate_row_is_skipped_at_train_begin_and_every_step_records_the_rest(
        producer_settings, kafka_bootstrap, topic, tmp_path, caplog):
    data = _eval_file(tmp_path / "eval.jsonl", '{"prompt": "bad \\ud800", "ground_truth": "x"}')
    with caplog.at_level(logging.INFO):
        callback = _train(tmp_path, str(data), producer_settings)
    assert f"{data} line 3 (source_index 2) the prompt holds a lone surrogate (U+D800)" in caplog.text
    assert caplog.text.count("lone surrogate") == 1  # once, at train begin: not at every step
    events = read_events(kafka_bootstrap, topic, N * 2)
    _every_step_recorded(callback, events, 2, caplog)
    assert 2 not in {e.source_index for e in events}


def test_sets_create_skips_a_lone_surrogate_row_with_a_warning_and_refuses_it_by_index(tmp_path, database_url):
    from predstream.consumer import ConsumerSettings, get_set, list_sets

    data = _eval_file(tmp_path / "eval.jsonl", '{"prompt": "bad \\ud800"}')
    sampled = _cli("sets", "create", "all", "--from", str(data), "--sample", "20", "--database-url", database_url)
    assert sampled.exit_code == 0, sampled.output
    assert "line 3 (source_index 2) the prompt holds a lone surrogate" in sampled.output
    assert "Traceback" not in sampled.output
    assert [i.source_index for i in get_set(ConsumerSettings(database_url=database_url), "all").items] == [0, 1, 3, 4,
                                                                                                           5, 6, 7, 8]

    picked = _cli("sets", "create", "bad", "--from", str(data), "--indices", "1,2", "--database-url", database_url)
    assert picked.exit_code == 2 and "Traceback" not in picked.output
    assert picked.output.strip().splitlines()[-1].startswith(f"error: {data} line 3 (source_index 2) the prompt holds")
    assert [s.name for s in list_sets(ConsumerSettings(database_url=database_url))] == ["all"]


# -- a path over 256 characters, and another spelling of the same path ------------------------


def test_a_dataset_path_over_256_characters_records_every_step(producer_settings, kafka_bootstrap, topic,
                                                              tmp_path, caplog):
    deep = tmp_path.joinpath(*[f"folder-{i}-" + "d" * 50 for i in range(5)])
    data = _eval_file(deep / "eval.jsonl")
    assert len(str(data)) > MAX_JOB_ID_CHARS
    with caplog.at_level(logging.INFO):
        callback = _train(tmp_path, str(data), producer_settings)
    events = read_events(kafka_bootstrap, topic, N * 2)
    _every_step_recorded(callback, events, 2, caplog)
    ids = {e.sample_source_id for e in events}
    assert len(ids) == 1 and len(ids.pop()) <= MAX_JOB_ID_CHARS
    assert all(e.sample_source_id.endswith("/eval.jsonl") for e in events)


def test_resuming_with_another_spelling_of_the_path_writes_the_same_rows(
        producer_settings, consumer_settings, kafka_bootstrap, topic, database_url, tmp_path, monkeypatch):
    from support import wait_for
    from support.consumer_kit import count_rows, worker_thread

    data = _eval_file(tmp_path / "eval.jsonl")
    monkeypatch.chdir(tmp_path)
    first = _train(tmp_path, "eval.jsonl", producer_settings, max_steps=4, resume="", every_n_steps=2)
    checkpoint = str(tmp_path / "run" / "checkpoint-2")
    again = _train(tmp_path, str(data.resolve()), producer_settings, max_steps=4, resume=checkpoint, every_n_steps=2)
    assert again.job_id == first.job_id  # resumed: the job file keeps the job id
    events = read_events(kafka_bootstrap, topic, N * 3)
    assert len(events) == N * 3  # steps 2 and 4, then step 4 again after the resume
    assert len({e.event_id for e in events}) == N * 2  # ... on the same identities

    with worker_thread(consumer_settings) as worker:
        consumed = worker.metrics.registry.get_sample_value
        wait_for(lambda: consumed("predstream_events_consumed_total") == N * 3, 60, "every event consumed")
        wait_for(lambda: count_rows(database_url) == N * 2, 30, "the rows")
    assert count_rows(database_url) == N * 2  # one row per prompt and step: nothing doubled


def test_resuming_after_the_dataset_moved_reuses_the_id_of_the_first_start(
        producer_settings, kafka_bootstrap, topic, tmp_path):
    first_home = _eval_file(tmp_path / "old-checkout" / "eval.jsonl")
    first = _train(tmp_path, str(first_home), producer_settings, max_steps=4, resume="", every_n_steps=2)
    moved = tmp_path / "new-checkout" / "eval.jsonl"
    moved.parent.mkdir()
    first_home.rename(moved)  # the checkout moved (another host, another mount point)
    checkpoint = str(tmp_path / "run" / "checkpoint-2")
    again = _train(tmp_path, str(moved), producer_settings, max_steps=4, resume=checkpoint, every_n_steps=2)
    assert again.job_id == first.job_id
    events = read_events(kafka_bootstrap, topic, N * 3)
    assert len(events) == N * 3
    assert {e.sample_source_id for e in events} == {os.path.realpath(first_home)}  # the first start's id
    assert len({e.event_id for e in events}) == N * 2  # the resumed step 4 lands on the same rows


# -- a byte order mark ------------------------------------------------------------------------


def test_a_jsonl_file_with_a_byte_order_mark_keeps_row_0(producer_settings, kafka_bootstrap, topic, tmp_path, caplog):
    data = _eval_file(tmp_path / "eval.jsonl", rows=N, prefix=b"\xef\xbb\xbf")
    with caplog.at_level(logging.INFO):
        callback = _train(tmp_path, str(data), producer_settings, max_steps=1)
    events = read_events(kafka_bootstrap, topic, N)
    _every_step_recorded(callback, events, 1, caplog)
    assert sorted(e.source_index for e in events) == [0, 1, 2, 3]
    assert "not valid JSON" not in caplog.text


def test_sets_create_reads_a_json_array_with_a_byte_order_mark(tmp_path, database_url):
    from predstream.consumer import ConsumerSettings, get_set

    data = tmp_path / "eval.json"
    data.write_bytes(b"\xef\xbb\xbf" + json.dumps(addition_rows(3, seed=1)).encode())
    result = _cli("sets", "create", "bom", "--from", str(data), "--indices", "0,2", "--database-url", database_url)
    assert result.exit_code == 0, result.output
    assert [i.source_index for i in get_set(ConsumerSettings(database_url=database_url), "bom").items] == [0, 2]


# -- rows the contract refuses --------------------------------------------------------------


def test_a_role_over_64_characters_is_skipped_at_train_begin_and_nothing_is_dropped(
        producer_settings, kafka_bootstrap, topic, tmp_path, caplog):
    long_role = json.dumps({"messages": [{"role": "r" * 65, "content": "1+1="}], "ground_truth": "2"})
    data = _eval_file(tmp_path / "eval.jsonl", long_role, rows=N)
    with caplog.at_level(logging.INFO):
        callback = _train(tmp_path, str(data), producer_settings)
    assert f"{data} line 3 (source_index 2) breaks the event contract (messages.0.role" in caplog.text
    events = read_events(kafka_bootstrap, topic, N * 2)
    _every_step_recorded(callback, events, 2, caplog)
    assert sorted({e.source_index for e in events}) == [0, 1, 3, 4]


def test_a_null_in_a_json_array_is_named_in_a_warning(tmp_path, database_url):
    from predstream.consumer import ConsumerSettings, get_set

    data = tmp_path / "eval.json"
    data.write_text(json.dumps([{"prompt": "1+1="}, None, {"prompt": "2+2="}]))
    result = _cli("sets", "create", "nulls", "--from", str(data), "--sample", "3", "--database-url", database_url)
    assert result.exit_code == 0, result.output
    assert f"{data} item 1 is null, not an object; skipped" in result.output
    assert [i.source_index for i in get_set(ConsumerSettings(database_url=database_url), "nulls").items] == [0, 2]


def test_a_row_too_large_for_any_event_is_one_clear_error_in_sets_create(tmp_path, database_url):
    data = tmp_path / "eval.jsonl"
    data.write_text(json.dumps({"prompt": "€" * 150_000, "answer": "€" * 150_000}) + "\n", encoding="utf-8")
    result = _cli("sets", "create", "big", "--from", str(data), "--indices", "0", "--database-url", database_url)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "line 1 (source_index 0) makes an event of" in result.output and "limit is 900000 bytes" in result.output


# -- datasets objects -----------------------------------------------------------------------


def test_a_dataset_dict_with_one_split_trains_and_with_two_stops_before_the_first_step(
        producer_settings, kafka_bootstrap, topic, tmp_path, caplog):
    datasets = pytest.importorskip("datasets")
    rows = addition_rows(8, seed=5)
    one = datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
    with caplog.at_level(logging.INFO):
        callback = _train(tmp_path, one, producer_settings, max_steps=1)
    _every_step_recorded(callback, read_events(kafka_bootstrap, topic, N), 1, caplog)

    two = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows)})
    with pytest.raises(DatasetError, match=r"has 2 splits \('train', 'test'\): pass the one to sample from"):
        _train(tmp_path, two, producer_settings, max_steps=1, out="two")
    assert not (tmp_path / "two" / "checkpoint-1").exists()


def test_an_iterable_dataset_trains_like_its_rows(producer_settings, kafka_bootstrap, topic, tmp_path, caplog):
    datasets = pytest.importorskip("datasets")
    rows = addition_rows(8, seed=5)
    with caplog.at_level(logging.INFO):
        callback = _train(tmp_path, datasets.Dataset.from_list(rows).to_iterable_dataset(), producer_settings,
                          max_steps=1)
    events = read_events(kafka_bootstrap, topic, N)
    _every_step_recorded(callback, events, 1, caplog)
    assert {e.prompt for e in events} <= {r["prompt"] for r in rows}


def test_load_dataset_json_gets_an_id_from_its_file_not_hf_json_train(producer_settings, kafka_bootstrap, topic,
                                                                     tmp_path, caplog):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    ids = []
    for name in ("a", "b"):
        data = _eval_file(tmp_path / f"{name}.jsonl", rows=N)
        loaded = datasets.load_dataset("json", data_files=str(data), cache_dir=str(tmp_path / "hf-cache"))
        with caplog.at_level(logging.INFO):
            callback = _train(tmp_path, loaded, producer_settings, max_steps=1, out=f"run-{name}")
        ids.append(callback.samples[0].sample_source_id)
    events = read_events(kafka_bootstrap, topic, 2 * N)
    assert len(events) == 2 * N
    assert {e.sample_source_id for e in events} == set(ids) and len(set(ids)) == 2
    assert all(i.startswith("hf:json:train@") for i in ids)
    assert os.path.isdir(tmp_path / "hf-cache")
