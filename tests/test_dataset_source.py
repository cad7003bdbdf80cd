"""Reading eval datasets: an identity that does not depend on how the path is spelled, and
every row the contract would refuse caught once, at sampling time, with file and line."""

from __future__ import annotations

import json
import logging
import os

import pytest

from predstream.producer.dataset_source import bounded_id, dataset_id
from predstream.producer.errors import DatasetError
from predstream.producer.sampler import sample_dataset
from predstream.schemas import MAX_JOB_ID_CHARS, MAX_TEXT_CHARS, PredictionEvent


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _contract_takes(source_id: str) -> bool:
    PredictionEvent.create(job_id="j", epoch=0, step=0, sample_index=0, prompt="p", prediction="x",
                           sample_source="dataset", sample_source_id=source_id)
    return True


def test_every_spelling_of_a_path_is_one_dataset(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    path = data / "eval.jsonl"
    _write_jsonl(path, [{"prompt": "a"}])
    (tmp_path / "link.jsonl").symlink_to(path)
    monkeypatch.chdir(data)
    spellings = ["eval.jsonl", "./eval.jsonl", str(path), f"{data}/../data/eval.jsonl", str(tmp_path / "link.jsonl")]
    ids = {dataset_id(s) for s in spellings} | {sample_dataset(s, 1)[0].sample_source_id for s in spellings}
    assert ids == {os.path.realpath(path)}
    other = data / "other.jsonl"
    _write_jsonl(other, [{"prompt": "a"}])
    assert dataset_id("other.jsonl") != dataset_id("eval.jsonl")


def test_a_path_longer_than_the_contract_allows_gets_a_bounded_id_with_a_readable_tail(tmp_path):
    deep = tmp_path
    for i in range(5):
        deep = deep / (f"level{i}-" + "x" * 60)
    deep.mkdir(parents=True)
    path, twin = deep / "eval.jsonl", deep / "eval2.jsonl"
    _write_jsonl(path, [{"prompt": "a"}, {"prompt": "b"}])
    _write_jsonl(twin, [{"prompt": "a"}])
    assert len(str(path)) > MAX_JOB_ID_CHARS
    samples = sample_dataset(path, 2)
    source_id = samples[0].sample_source_id
    assert len(source_id) <= MAX_JOB_ID_CHARS and source_id.endswith("/eval.jsonl") and source_id.startswith("sha256:")
    assert _contract_takes(source_id)
    assert dataset_id(twin) != source_id and dataset_id(str(path)) == source_id


def test_an_id_that_is_not_valid_text_is_bounded_too():
    bad = "/data/\udcff/eval.jsonl"  # an undecodable file name byte, as os.fsdecode gives it
    assert bounded_id(bad).startswith("sha256:") and bounded_id(bad).encode("utf-8")
    assert bounded_id("/plain/eval.jsonl") == "/plain/eval.jsonl"


def test_a_dataset_id_the_contract_refuses_is_one_clear_error():
    with pytest.raises(DatasetError, match="cannot be an event's sample_source_id.*pass another dataset_id="):
        sample_dataset([{"prompt": "a"}], 1, dataset_id="x" * (MAX_JOB_ID_CHARS + 1))


def test_a_byte_order_mark_is_not_part_of_row_0(tmp_path):
    jsonl, array = tmp_path / "eval.jsonl", tmp_path / "eval.json"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "zero"}\n{"prompt": "one"}\n')
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"prompt": "zero"}, {"prompt": "one"}]).encode())
    for path in (jsonl, array):
        assert [(s.source_index, s.prompt) for s in sample_dataset(path, 5)] == [(0, "zero"), (1, "one")]


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"is not UTF-8 text \(line 2"):
        sample_dataset(path, 1)


def test_null_rows_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    array, jsonl = tmp_path / "eval.json", tmp_path / "eval.jsonl"
    array.write_text(json.dumps([{"prompt": "a"}, None, {"prompt": "c"}]))
    jsonl.write_text('{"prompt": "a"}\nnull\n')
    with caplog.at_level(logging.WARNING, logger="predstream.producer"):
        assert [s.source_index for s in sample_dataset(array, 5)] == [0, 2]
        assert [s.source_index for s in sample_dataset(jsonl, 5)] == [0]
    assert f"{array} item 1 is null, not an object; skipped" in caplog.text
    assert f"{jsonl} line 2 (source_index 1) is null, not an object; skipped" in caplog.text


@pytest.mark.parametrize(
    "bad_row, says",
    [
        ('{"prompt": "bad \\ud800"}', "the prompt holds a lone surrogate (U+D800)"),
        ('{"messages": [{"role": "user", "content": "x\\udc00"}]}', "message 0 content holds a lone surrogate"),
        ('{"prompt": "p", "answer": "\\ud800"}', "the reference answer holds a lone surrogate"),
        (json.dumps({"messages": [{"role": "r" * 65, "content": "x"}]}), "breaks the event contract (messages.0.role"),
        (json.dumps({"messages": [{"role": "", "content": "x"}]}), "breaks the event contract (messages.0.role"),
        (json.dumps({"prompt": "x" * (MAX_TEXT_CHARS + 1)}), "breaks the event contract (prompt"),
        (json.dumps({"prompt": "nul\u0000"}), "NUL"),
        (json.dumps({"prompt": "é" * MAX_TEXT_CHARS, "answer": "€" * MAX_TEXT_CHARS}, ensure_ascii=False),
         "bytes before any prediction"),
        (json.dumps({"messages": [{"role": "user", "content": 5}]}), "needs a string 'role' and a string 'content'"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}] * 257}), "breaks the event contract (messages"),
        ("[1, 2]", "is a list, not an object"),
    ],
)
def test_a_row_the_contract_would_refuse_is_skipped_once_with_file_and_line(tmp_path, caplog, bad_row, says):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"prompt": "good 0"}\n' + bad_row + '\n{"prompt": "good 2"}\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="predstream.producer"):
        samples = sample_dataset(path, 3, seed=1)
    assert [s.source_index for s in samples] == [0, 2]
    assert f"{path} line 2 (source_index 1)" in caplog.text and says in caplog.text, caplog.text
    for s in samples:  # what is left is what the contract takes
        assert PredictionEvent.create(job_id="j", epoch=0, step=0, sample_index=s.sample_index, prompt=s.prompt,
                                      messages=s.messages_list(), ground_truth=s.ground_truth, prediction="p",
                                      prompt_id=s.prompt_id, source_index=s.source_index,
                                      sample_source=s.sample_source, sample_source_id=s.sample_source_id)


def test_many_bad_rows_are_counted_and_listed_not_logged_one_by_one(caplog):
    rows = [{"prompt": None}] * 30 + [{"prompt": "ok"}]
    with caplog.at_level(logging.WARNING, logger="predstream.producer"):
        assert len(sample_dataset(rows, 3)) == 1
    assert len(caplog.records) == 6
    assert "30 unusable rows skipped in all; the 25 not listed above are rows 5, 6, 7" in caplog.records[-1].message


# -- datasets (Hugging Face) ---------------------------------------------------------------


@pytest.fixture()
def hf(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    return datasets


def test_load_dataset_json_gets_an_id_per_file_whatever_the_spelling(hf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}"} for i in range(5)])
    _write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b{i}"} for i in range(5)])
    cache = str(tmp_path / "cache")

    def load(f, **kw):
        return hf.load_dataset("json", data_files=f, split="train", cache_dir=cache, **kw)

    a_rel, a_abs = dataset_id(load("a.jsonl")), dataset_id(load(str(tmp_path / "a.jsonl")))
    b = dataset_id(load("b.jsonl"))
    assert a_rel == a_abs != b and a_rel.startswith("hf:json:train@")
    streamed = dataset_id(load("a.jsonl", streaming=True))
    assert streamed == f"hf:json:train@{os.path.realpath(tmp_path / 'a.jsonl')}"
    assert dataset_id(load(str(tmp_path / "a.jsonl"), streaming=True)) == streamed


def test_a_dataset_dict_with_one_split_is_that_split_and_with_more_a_clear_error(hf):
    rows = [{"prompt": f"{i}"} for i in range(10)]
    one = hf.DatasetDict({"test": hf.Dataset.from_list(rows)})
    assert [s.prompt for s in sample_dataset(one, 3, seed=2)] == [s.prompt for s in sample_dataset(rows, 3, seed=2)]
    two = hf.DatasetDict({"train": hf.Dataset.from_list(rows), "test": hf.Dataset.from_list(rows)})
    with pytest.raises(DatasetError, match=r"has 2 splits \('train', 'test'\): pass the one to sample from, "
                                           r"e.g. dataset=ds\['test'\]"):
        sample_dataset(two, 3)


def test_an_iterable_dataset_is_read_once_and_sampled_like_its_rows(hf):
    rows = [{"prompt": f"{i}", "answer": str(i)} for i in range(20)]
    streamed = hf.Dataset.from_list(rows).to_iterable_dataset()
    picked = sample_dataset(streamed, 4, seed=5)
    assert [(s.source_index, s.prompt_id) for s in picked] == [(s.source_index, s.prompt_id)
                                                               for s in sample_dataset(rows, 4, seed=5)]
    assert picked[0].sample_source_id.startswith("inline:")  # no name, no files: a hash of its rows
    generated = hf.IterableDataset.from_generator(lambda: iter(rows))
    assert sample_dataset(generated, 4, seed=5)[0].sample_source_id == picked[0].sample_source_id
    assert sample_dataset(hf.IterableDatasetDict({"test": generated}), 4, seed=5) == picked
