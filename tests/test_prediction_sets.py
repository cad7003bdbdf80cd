"""Prediction sets: created from dataset files, stored in a real Postgres, exported, and read
back by the training side (``predstream.producer.prediction_sets``) from the file and from the database.
What a set is (items, rules, ``set_id``, the file) is ``predstream.schemas.prediction_set``: both
sides refuse the same bad item with the same message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from predstream.cli import app
from predstream.consumer.prediction_sets import create_set, delete_set, get_set, list_sets
from predstream.consumer.settings import ConsumerSettings
from predstream.producer.prediction_sets import (
    load_prediction_set,
    prediction_set_from_samples,
    prediction_set_samples,
)
from predstream.producer.sampler import sample_dataset
from predstream.producer.settings import ProducerSettings
from predstream.schemas import (
    PredictionSet,
    PredictionSetError,
    PredictionSetItem,
    compute_prompt_id,
    items_from_rows,
    new_prediction_set,
    prediction_set_id,
    read_prediction_set_file,
)


def _dataset(path: Path) -> Path:
    """20 rows; line 3 (source_index 2) is blank, row 7 is a chat with a trailing assistant turn."""
    lines = []
    for i in range(20):
        if i == 2:
            lines.append("")
        elif i == 7:
            lines.append(json.dumps({"messages": [{"role": "user", "content": "say hi"},
                                                  {"role": "assistant", "content": "hi"}]}))
        else:
            lines.append(json.dumps({"prompt": f"{i} + {i} =", "answer": str(2 * i), "question": f"q{i}",
                                     "solution": f"s{i}"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_set_built_from_samples_or_from_plain_rows_has_the_same_id():
    samples = sample_dataset(_dataset_rows(), 5, seed=3)
    pset = prediction_set_from_samples("x", samples)
    rows = [{"source_index": s.source_index, "prompt": s.prompt, "messages": s.messages_list(),
             "ground_truth": s.ground_truth} for s in samples]
    assert new_prediction_set("x", items_from_rows(rows)).set_id == pset.set_id
    assert new_prediction_set("x", items_from_rows(rows[::-1])).set_id != pset.set_id  # the order is part of the set


def _dataset_rows() -> list[dict]:
    return [{"prompt": f"{i} * 3 =", "answer": str(3 * i)} for i in range(12)]


@pytest.mark.integration
def test_sets_create_from_indices_then_list_show_export_and_training_reads_the_same_items(tmp_path, database_url):
    data = _dataset(tmp_path / "eval.jsonl")
    created = _cli("sets", "create", "hard-ones", "--from", str(data), "--indices", "9,1,7",
                   "--description", "three picked by hand", "--database-url", database_url)
    assert created.exit_code == 0, created.output
    stored = get_set(ConsumerSettings(database_url=database_url), "hard-ones")
    assert created.stdout.strip() == f"created set 'hard-ones' ({stored.set_id}, 3 items)"

    assert [i.source_index for i in stored.items] == [9, 1, 7]  # the order given
    assert [i.item_index for i in stored.items] == [0, 1, 2]
    assert stored.items[0].prompt == "9 + 9 =" and stored.items[0].ground_truth == "18"
    chat = stored.items[2]
    assert chat.messages_list() == [{"role": "user", "content": "say hi"}] and chat.ground_truth == "hi"
    assert chat.prompt_id == compute_prompt_id([{"role": "user", "content": "say hi"}], None)
    assert (stored.source, stored.seed, stored.description) == (str(data), None, "three picked by hand")

    listed = _cli("sets", "list", "--json", "--database-url", database_url)
    assert [(s["name"], s["set_id"], s["item_count"]) for s in json.loads(listed.output)] == [
        ("hard-ones", stored.set_id, 3)]
    shown = _cli("sets", "show", "hard-ones", "--database-url", database_url)
    assert shown.exit_code == 0 and "row 9" in shown.output and "9 + 9 =" in shown.output
    assert "say hi" in shown.output

    out = tmp_path / "hard-ones.json"
    exported = _cli("sets", "export", "hard-ones", str(out), "--database-url", database_url)
    assert exported.exit_code == 0, exported.output
    from_file = load_prediction_set(out)
    from_db = load_prediction_set("hard-ones", ProducerSettings(database_url=database_url))
    assert from_file == from_db
    assert [(s.sample_index, s.source_index, s.prompt_id, s.prompt, s.messages_list(), s.ground_truth)
            for s in from_file] == [(i.item_index, i.source_index, i.prompt_id, i.prompt, i.messages_list(),
                                     i.ground_truth) for i in stored.items]
    assert {(s.sample_source, s.sample_source_id) for s in from_file} == {("prediction_set", stored.set_id)}
    assert read_prediction_set_file(out).set_id == stored.set_id


@pytest.mark.integration
def test_sets_create_by_sample_and_seed_picks_what_the_sampler_picks(tmp_path, database_url):
    data = _dataset(tmp_path / "eval.jsonl")
    result = _cli("sets", "create", "s5", "--from", str(data), "--sample", "5", "--seed", "42",
                  "--database-url", database_url)
    assert result.exit_code == 0, result.output

    stored = get_set(ConsumerSettings(database_url=database_url), "s5")
    expected = sample_dataset(data, 5, seed=42)
    assert [(i.source_index, i.prompt_id) for i in stored.items] == [(s.source_index, s.prompt_id) for s in expected]
    assert 2 not in [i.source_index for i in stored.items]  # the blank line is never picked
    assert stored.seed == 42
    assert stored.set_id == prediction_set_from_samples("s5", expected).set_id


@pytest.mark.integration
def test_creating_a_set_again_is_a_no_op_but_a_taken_name_with_other_items_is_an_error(tmp_path, database_url):
    data = _dataset(tmp_path / "eval.jsonl")
    args = ["sets", "create", "mine", "--from", str(data), "--sample", "4", "--seed", "1",
            "--database-url", database_url]
    assert _cli(*args).exit_code == 0
    again = _cli(*args)
    assert again.exit_code == 0 and "already exists with the same items: nothing to do" in again.output

    other = _cli("sets", "create", "mine", "--from", str(data), "--sample", "4", "--seed", "2",
                 "--database-url", database_url)
    assert other.exit_code == 2
    assert "a set named 'mine' already exists with different items" in other.output
    assert "choose another name" in other.output

    alias = _cli("sets", "create", "mine-too", "--from", str(data), "--sample", "4", "--seed", "1",
                 "--database-url", database_url)
    assert alias.exit_code == 2 and "already stored as set 'mine'" in alias.output
    assert [s.name for s in list_sets(ConsumerSettings(database_url=database_url))] == ["mine"]


@pytest.mark.integration
def test_sets_create_reads_custom_prompt_and_answer_fields(tmp_path, database_url):
    data = _dataset(tmp_path / "eval.jsonl")
    result = _cli("sets", "create", "qa", "--from", str(data), "--indices", "0,4", "--prompt-field", "question",
                  "--answer-field", "solution", "--database-url", database_url)
    assert result.exit_code == 0, result.output
    items = get_set(ConsumerSettings(database_url=database_url), "qa").items
    assert [(i.prompt, i.ground_truth) for i in items] == [("q0", "s0"), ("q4", "s4")]


@pytest.mark.integration
def test_sets_create_explains_bad_requests(tmp_path, database_url):
    data = _dataset(tmp_path / "eval.jsonl")
    db = ["--database-url", database_url]
    cases = [
        (["--indices", "1,99"], "there is no row 99"),
        (["--indices", "2"], "line 3 (source_index 2) is blank or not JSON"),
        (["--indices", "1,x"], "bad index 'x'"),
        (["--indices", "1,1"], "index 1 is given twice"),
        ([], "give either --indices"),
        (["--indices", "1", "--sample", "3"], "give either --indices"),
    ]
    for extra, message in cases:
        result = _cli("sets", "create", "bad", "--from", str(data), *extra, *db)
        assert result.exit_code == 2 and message in result.output, (extra, result.output)
    missing = _cli("sets", "create", "bad", "--from", str(tmp_path / "nope.jsonl"), "--sample", "2", *db)
    assert missing.exit_code == 2 and "eval dataset not found" in missing.output
    assert list_sets(ConsumerSettings(database_url=database_url)) == []
    unknown = _cli("sets", "show", "nothing-here", *db)
    assert unknown.exit_code == 2 and "no prediction set named 'nothing-here'" in unknown.output


@pytest.mark.integration
def test_sets_delete_removes_the_set_and_its_items(tmp_path, database_url):
    pset = new_prediction_set("tmp", items_from_rows([{"prompt": "a"}, {"prompt": "b", "ground_truth": "B"}]),
                              source="inline")
    stored, created = create_set(ConsumerSettings(database_url=database_url), pset)
    assert created and get_set(ConsumerSettings(database_url=database_url), stored.set_id).name == "tmp"  # by id too

    result = _cli("sets", "delete", "tmp", "--yes", "--database-url", database_url)
    assert result.exit_code == 0, result.output
    assert list_sets(ConsumerSettings(database_url=database_url)) == []
    assert not delete_set(ConsumerSettings(database_url=database_url), "tmp")
    import psycopg

    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM prediction_set_items").fetchone()[0] == 0


def _unchecked(name: str, items: list[PredictionSetItem]) -> PredictionSet:
    """A set built without the rules (as a caller's own code could), its id computed."""
    return PredictionSet(set_id=prediction_set_id(items), name=name, items=tuple(items))


def _document(pset: PredictionSet) -> dict:
    """The export file of ``pset``, written field by field (its items may be beyond repair)."""
    return {"set_id": pset.set_id, "name": pset.name, "items": [
        {"item_index": i.item_index, "source_index": i.source_index, "prompt_id": i.prompt_id, "prompt": i.prompt,
         "messages": None if i.messages is None else list(i.messages), "ground_truth": i.ground_truth}
        for i in pset.items]}


def test_inconsistent_sets_are_refused_before_touching_the_database():
    nowhere = ConsumerSettings(database_url="postgresql://unused@127.0.0.1:1/x")
    good = items_from_rows([{"prompt": "a"}])
    with pytest.raises(PredictionSetError, match="does not match its prompt"):
        create_set(nowhere, _unchecked("x", [PredictionSetItem(0, compute_prompt_id(None, "other"), prompt="a")]))
    with pytest.raises(PredictionSetError, match="numbered 0..N-1"):
        create_set(nowhere, _unchecked("x", [PredictionSetItem(1, good[0].prompt_id, prompt="a")]))
    with pytest.raises(PredictionSetError, match="at least one item"):
        create_set(nowhere, _unchecked("x", []))
    with pytest.raises(PredictionSetError, match="reserved"):
        new_prediction_set("ps_0123", good)
    with pytest.raises(PredictionSetError, match="do not match its set_id"):
        create_set(nowhere, PredictionSet(set_id="ps_0000000000000000", name="x", items=tuple(good)))


_BAD_ITEMS = {
    "a NUL character": {"prompt": "1 +\x00 1 ="},
    "a role over 64 characters": {"messages": [{"role": "r" * 65, "content": "hi"}]},
    "a lone surrogate": {"prompt": "bad \ud800"},
    "neither prompt nor messages": {"ground_truth": "2"},
    "a prompt_id of another prompt": {"prompt": "a", "prompt_id": "0" * 64},
    "a negative source_index": {"prompt": "a", "source_index": -1},
    "a number for a prompt": {"prompt": 7},
    "messages without content": {"messages": [{"role": "user"}]},
    "too many messages": {"messages": [{"role": "user", "content": "x"}] * 257},
    "too large for any event": {"prompt": "€" * 150_000, "ground_truth": "€" * 150_000},
}


@pytest.mark.parametrize("bad", list(_BAD_ITEMS), ids=list(_BAD_ITEMS))
def test_the_same_bad_item_is_refused_with_the_same_message_by_both_sides(tmp_path, bad):
    """The consumer's entry point (create_set) and the training side's (a set built from samples,
    and an export file read back) apply the one rule set of predstream.schemas.prediction_set."""
    good = {"prompt": "1 + 1 =", "ground_truth": "2"}
    rows = [good, {"source_index": 4, **_BAD_ITEMS[bad]}]
    items = items_from_rows(rows)
    said = {}

    with pytest.raises(PredictionSetError) as consumer_side:  # the consumer: a set handed to create_set
        create_set(ConsumerSettings(database_url="postgresql://unused@127.0.0.1:1/x"), _unchecked("sums", items))
    said["consumer create_set"] = str(consumer_side.value)

    from predstream.producer.sampler import Sample

    samples = [Sample(sample_index=i, source_index=it.source_index, prompt_id=it.prompt_id, prompt=it.prompt,
                      messages=it.messages, ground_truth=it.ground_truth) for i, it in enumerate(items)]
    with pytest.raises(PredictionSetError) as from_samples:  # the training side: a set of its samples
        prediction_set_from_samples("sums", samples)
    said["producer prediction_set_from_samples"] = str(from_samples.value)

    path = tmp_path / "sums.json"  # the training side: an export file holding the item (its set_id right)
    path.write_text(json.dumps(_document(_unchecked("sums", items))), encoding="utf-8")
    with pytest.raises(PredictionSetError) as from_file:
        load_prediction_set(path)
    said["producer load_prediction_set(file)"] = str(from_file.value)

    problem = said["consumer create_set"].removeprefix("prediction set 'sums': ")
    assert problem.startswith("item 1"), said
    assert said == {
        "consumer create_set": f"prediction set 'sums': {problem}",
        "producer prediction_set_from_samples": f"prediction set 'sums': {problem}",
        "producer load_prediction_set(file)": f"prediction set file {path}: {problem}",
    }


def _stored_set(database_url: str, name: str = "fixed"):
    items = items_from_rows([{"prompt": "1 + 1 =", "ground_truth": "2"}, {"prompt": "2 + 2 =", "ground_truth": "4"}])
    pset = new_prediction_set(name, items, source="inline")
    return create_set(ConsumerSettings(database_url=database_url), pset)[0]


@pytest.mark.integration
@pytest.mark.parametrize("statement, message", [
    ("UPDATE prediction_set_items SET ground_truth = '5' WHERE item_index = 1", "items cannot be updated"),
    ("DELETE FROM prediction_set_items WHERE item_index = 1", "cannot be deleted one by one"),
    ("INSERT INTO prediction_set_items (set_id, item_index, prompt_id, prompt) "
     "SELECT set_id, 2, prompt_id, prompt FROM prediction_set_items WHERE item_index = 0", "cannot take more"),
    ("UPDATE prediction_sets SET item_count = 3", "set_id and item_count cannot change"),
    ("UPDATE prediction_sets SET set_id = 'ps_0000000000000000'", "set_id and item_count cannot change"),
])
def test_the_database_refuses_every_change_to_a_created_set(database_url, statement, message):
    import psycopg

    stored = _stored_set(database_url)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation, match=message) as caught:
            conn.execute(statement)
    assert stored.set_id in str(caught.value)
    # unchanged, and still verified
    assert get_set(ConsumerSettings(database_url=database_url), "fixed").items == stored.items
    with psycopg.connect(database_url) as conn:  # what a set's metadata may still do
        conn.execute("UPDATE prediction_sets SET description = 'the two sums', name = 'sums'")
    assert get_set(ConsumerSettings(database_url=database_url), "sums").description == "the two sums"


@pytest.mark.integration
def test_a_set_changed_behind_the_triggers_back_is_refused_by_every_database_reader(tmp_path, database_url):
    import psycopg

    stored = _stored_set(database_url)
    with psycopg.connect(database_url) as conn:  # e.g. a database without migration 0010
        conn.execute("ALTER TABLE prediction_set_items DISABLE TRIGGER prediction_set_items_immutable")
        conn.execute("UPDATE prediction_set_items SET ground_truth = '5' WHERE item_index = 1")
    for read in (lambda: load_prediction_set("fixed", ProducerSettings(database_url=database_url)),
                 lambda: get_set(ConsumerSettings(database_url=database_url), "fixed")):
        with pytest.raises(PredictionSetError) as caught:
            read()
        text = str(caught.value)
        assert "'fixed'" in text and stored.set_id in text and "do not match its set_id" in text
        assert "predstream sets create" in text
    shown = _cli("sets", "export", "fixed", str(tmp_path / "fixed.json"), "--database-url", database_url)
    assert shown.exit_code == 2 and "do not match its set_id" in shown.output
    assert not (tmp_path / "fixed.json").exists()


@pytest.mark.integration
def test_an_edited_export_file_is_refused_with_the_set_name_and_what_to_do(tmp_path, database_url):
    stored = _stored_set(database_url)
    path = tmp_path / "fixed.json"
    assert _cli("sets", "export", "fixed", str(path), "--database-url", database_url).exit_code == 0
    assert read_prediction_set_file(path).set_id == stored.set_id
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["items"][1]["ground_truth"] = "5"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(PredictionSetError) as caught:
        read_prediction_set_file(path)
    text = str(caught.value)
    assert str(path) in text and "'fixed'" in text and stored.set_id in text
    assert "export the set again" in text


def test_the_training_side_finds_the_database_in_its_settings_or_the_running_local_stack(tmp_path, monkeypatch):
    import os

    from predstream.local import settings_with_local_stack

    monkeypatch.setenv("PREDSTREAM_HOME", str(tmp_path))  # no local stack here
    assert settings_with_local_stack(ProducerSettings).database_url is None
    monkeypatch.setenv("PREDSTREAM_DATABASE_URL", "postgresql://me@db.example.com/p")
    assert settings_with_local_stack(ProducerSettings).database_url == "postgresql://me@db.example.com/p"
    monkeypatch.delenv("PREDSTREAM_DATABASE_URL")
    (tmp_path / "stack.json").write_text(json.dumps({"bootstrap": "127.0.0.1:1", "pids": {"me": os.getpid()},
                                                     "database_url": "postgresql://stack@127.0.0.1:2/p"}))
    assert settings_with_local_stack(ProducerSettings).database_url == "postgresql://stack@127.0.0.1:2/p"
    given = settings_with_local_stack(ProducerSettings, database_url="postgresql://given@h/p")
    assert given.database_url == "postgresql://given@h/p"
    # the settings model alone reads its arguments and the environment, never the stack
    assert ProducerSettings().database_url is None and ProducerSettings().kafka_bootstrap is None


@pytest.mark.integration
def test_a_set_read_from_the_database_leaves_a_verified_copy_that_serves_when_no_database_is_configured(
    tmp_path, database_url, caplog
):
    from predstream.producer.set_copies import load_set_for_training

    stored = _stored_set(database_url)
    with_db = ProducerSettings(database_url=database_url, spool_dir=tmp_path / "spool")
    without_db = ProducerSettings(spool_dir=tmp_path / "spool")
    copies = with_db.prediction_sets_dir
    from_db = load_set_for_training("fixed", with_db)
    assert from_db.set_id == stored.set_id and [p.name for p in copies.iterdir()] == [f"{stored.set_id}.json"]
    assert prediction_set_samples(from_db) == load_prediction_set("fixed", with_db)

    for key in ("fixed", stored.set_id):  # by name or by id, with one warning each
        caplog.clear()
        assert load_set_for_training(key, without_db) == from_db
        assert [r.levelname for r in caplog.records] == ["WARNING"] and "no database is configured" in caplog.text

    path = copies / f"{stored.set_id}.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["items"][0]["prompt"], doc["items"][0]["prompt_id"] = "1 + 2 =", compute_prompt_id(None, "1 + 2 =")
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(PredictionSetError) as caught:
        load_set_for_training("fixed", without_db)
    assert "local copy of prediction set 'fixed' cannot be used" in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(PredictionSetError, match="no local copy of it"):
        load_set_for_training("other", without_db)
