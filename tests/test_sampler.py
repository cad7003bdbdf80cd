"""The sampler and prediction sets: stable identity of eval prompts (no torch needed)."""

from __future__ import annotations

import json
import logging
import os

import pytest

from predstream.producer.errors import DatasetError
from predstream.producer.prediction_sets import (
    load_prediction_set,
    prediction_set_from_samples,
    prediction_set_samples,
)
from predstream.producer.sampler import RowFormat, sample_dataset
from predstream.producer.settings import ProducerSettings
from predstream.schemas import (
    PredictionSetError,
    compute_prompt_id,
    read_prediction_set_file,
    write_prediction_set_file,
)


def _rows(n: int = 40) -> list[dict]:
    return [{"prompt": f"{i}+{i}=", "ground_truth": str(2 * i)} for i in range(n)]


def _identity(samples) -> list[tuple[int, str]]:
    return [(s.source_index, s.prompt_id) for s in samples]


def test_same_dataset_and_seed_pick_the_same_prompts_twice(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(_rows()))
    first = sample_dataset(path, 8, seed=7)
    second = sample_dataset(str(path), 8, seed=7)
    assert _identity(first) == _identity(second)
    assert [s.sample_index for s in first] == list(range(8))
    # the dataset's id is its resolved path, however it was spelled
    assert all(s.sample_source == "dataset" and s.sample_source_id == os.path.realpath(path) for s in first)
    # a different seed picks other rows; sampling is over the original indices
    assert _identity(sample_dataset(path, 8, seed=8)) != _identity(first)
    for s in first:
        assert s.prompt == f"{s.source_index}+{s.source_index}="
        assert s.prompt_id == compute_prompt_id(None, s.prompt)
        assert s.ground_truth == str(2 * s.source_index)


def test_jsonl_source_index_counts_every_line_including_blank_and_broken_ones(tmp_path, caplog):
    lines = [
        json.dumps({"prompt": "zero"}),
        "",
        "{not json",
        json.dumps({"prompt": "three", "answer": "3"}),
        "   ",
        json.dumps({"prompt": "five"}),
    ]
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="predstream.producer"):
        samples = sample_dataset(path, 10, seed=1)
    assert [(s.source_index, s.prompt) for s in samples] == [(0, "zero"), (3, "three"), (5, "five")]
    assert samples[1].ground_truth == "3"
    assert "line 3" in caplog.text and "not valid JSON" in caplog.text


def test_chat_rows_drop_the_trailing_assistant_answer_from_the_prompt():
    rows = [
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "id": 1},
        {"messages": [{"role": "system", "content": "be brief", "name": "x"}, {"role": "user", "content": "hi"}]},
    ]
    a, b = sample_dataset(rows, 2, seed=0, dataset_id="chat-v1")
    assert a.messages_list() == [{"role": "user", "content": "2+2?"}]
    assert a.ground_truth == "4"
    assert a.prompt_id == compute_prompt_id([{"role": "user", "content": "2+2?"}], None)
    assert b.messages_list()[0] == {"role": "system", "content": "be brief"}  # reduced to role/content
    assert b.ground_truth is None and a.sample_source_id == "chat-v1"


def test_prompt_and_answer_fields_are_configurable():
    rows = [{"question": "q1", "label": "a1"}, {"question": "q2", "label": "a2"}]
    samples = sample_dataset(rows, 2, seed=0, fmt=RowFormat(prompt_field="question", ground_truth_field="label"))
    assert [(s.prompt, s.ground_truth) for s in samples] == [("q1", "a1"), ("q2", "a2")]
    assert samples[0].sample_source_id.startswith("inline:")


def test_unusable_rows_are_skipped_and_an_empty_dataset_is_a_clear_error(caplog):
    rows = [{"text": "no prompt"}, {"prompt": 3}, {"prompt": "ok"}, {"prompt": "nul\x00"}]
    with caplog.at_level(logging.WARNING, logger="predstream.producer"):
        samples = sample_dataset(rows, 4, seed=0)
    assert [s.source_index for s in samples] == [2]
    assert "row 0 has no prompt" in caplog.text
    with pytest.raises(DatasetError, match="no usable rows"):
        sample_dataset([{"text": "x"}], 1)
    with pytest.raises(DatasetError, match="not found"):
        sample_dataset("/nonexistent/eval.jsonl", 1)


def test_hf_dataset_gets_the_same_samples_as_the_list_it_was_built_from():
    datasets = pytest.importorskip("datasets")
    rows = _rows(30)
    ds = datasets.Dataset.from_list(rows)
    from_ds = sample_dataset(ds, 5, seed=3)
    assert _identity(from_ds) == _identity(sample_dataset(rows, 5, seed=3))
    assert from_ds[0].sample_source_id.startswith("hf-fingerprint:")
    assert from_ds[0].sample_source_id == sample_dataset(datasets.Dataset.from_list(rows), 5,
                                                         seed=3)[0].sample_source_id


def test_prediction_set_from_exported_file_is_exactly_its_items(tmp_path):
    picked = sample_dataset(_rows(), 6, seed=11, dataset_id="adds")
    pset = prediction_set_from_samples("adds-6", picked, seed=11)
    path = write_prediction_set_file(pset, tmp_path / "adds-6.json")
    raw = json.loads(path.read_text())
    assert set(raw) >= {"set_id", "name", "source", "seed", "items"}
    assert raw["source"] == "adds" and raw["set_id"].startswith("ps_")
    assert set(raw["items"][0]) == {"item_index", "source_index", "prompt_id", "prompt", "messages", "ground_truth"}

    loaded = load_prediction_set(path)
    assert [(s.sample_index, s.source_index, s.prompt_id, s.prompt, s.ground_truth) for s in loaded] == [
        (i, s.source_index, s.prompt_id, s.prompt, s.ground_truth) for i, s in enumerate(picked)
    ]
    assert {(s.sample_source, s.sample_source_id) for s in loaded} == {("prediction_set", raw["set_id"])}
    assert read_prediction_set_file(path).name == "adds-6"


def test_tampered_prediction_set_file_is_refused(tmp_path):
    pset = prediction_set_from_samples("s", sample_dataset(_rows(), 2, seed=0))
    data = pset.to_json()
    data["items"][1]["prompt"] = "edited by hand"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PredictionSetError, match="does not match its prompt"):
        load_prediction_set(path)
    with pytest.raises(PredictionSetError, match="database_url"):
        load_prediction_set("some-set-name")
    with pytest.raises(PredictionSetError, match="PREDSTREAM_DATABASE_URL"):
        load_prediction_set("some-set-name", ProducerSettings())


@pytest.mark.integration
def test_prediction_set_is_read_from_postgres_by_name_or_id(database_url):
    import psycopg
    from psycopg.types.json import Jsonb

    picked = sample_dataset(
        [{"messages": [{"role": "user", "content": f"q{i}"}], "answer": f"a{i}"} for i in range(10)], 4, seed=2
    )
    pset = prediction_set_from_samples("chat-4", picked, source="chat.jsonl", seed=2)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO prediction_sets (set_id, name, source, seed, item_count) VALUES (%s, %s, %s, %s, %s)",
            (pset.set_id, pset.name, pset.source, pset.seed, len(pset.items)),
        )
        for s in pset.items:
            conn.execute(
                "INSERT INTO prediction_set_items (set_id, item_index, source_index, prompt_id, prompt, messages,"
                " ground_truth) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (pset.set_id, s.item_index, s.source_index, s.prompt_id, s.prompt, Jsonb(s.messages_list()),
                 s.ground_truth),
            )
    settings = ProducerSettings(database_url=database_url)
    by_name = load_prediction_set("chat-4", settings)
    by_id = load_prediction_set(pset.set_id, settings)
    assert by_name == by_id == prediction_set_samples(pset)
    with pytest.raises(PredictionSetError, match="no prediction set named 'nope'"):
        load_prediction_set("nope", settings)
