"""TrainingPredictionsCallback inside a real transformers.Trainer, publishing to the real broker."""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from predstream.producer import TrainingPredictionsCallback  # noqa: E402
from predstream.producer.callback import JOB_FILE  # noqa: E402
from predstream.schemas import compute_prompt_id  # noqa: E402
from predstream.tinymodel import MODEL_NAME, TokenizedTask, addition_rows, build_model, build_tokenizer, collate  # noqa: E402
from support.consumer_kit import read_events  # noqa: E402

pytestmark = pytest.mark.train


class _FakePublisher:
    def __init__(self):
        self.events = []
        self.flushed = self.closed = False

    def publish_many(self, events):
        self.events.extend(events)

    def flush(self, timeout=None):
        self.flushed = True
        return SimpleNamespace(delivered=len(self.events), spooled=0, dropped=0, pending=0)

    def close(self):
        self.closed = True


def _trainer(callback, tmp_path, *, max_steps=30, eval_steps=10):
    from transformers import Trainer, TrainingArguments

    tok = build_tokenizer()
    model = build_model(tok, seed=0)
    args = TrainingArguments(
        output_dir=str(tmp_path / "run-out"),
        max_steps=max_steps,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=32,
        learning_rate=3e-3,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=0,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=TokenizedTask(addition_rows(2000, seed=1), tok),
        eval_dataset=TokenizedTask(addition_rows(32, seed=2), tok),
        data_collator=lambda batch: collate(batch, tok.pad_token_id),
        processing_class=tok,
        callbacks=[callback],
    )


@pytest.mark.integration
@pytest.mark.slow
def test_trainer_streams_predictions_that_change_as_the_model_learns(producer_settings, kafka_bootstrap, topic,
                                                                     tmp_path):
    eval_rows = addition_rows(50, seed=3)
    callback = TrainingPredictionsCallback(
        dataset=eval_rows,
        dataset_id="addition-eval",
        n_samples=6,
        seed=4,
        every_n_steps=15,  # records at 15 and 30; evaluations at 10, 20, 30 (30 only once)
        max_new_tokens=4,
        batch_size=4,
        settings=producer_settings,
        raise_errors=True,
    )
    trainer = _trainer(callback, tmp_path)
    trainer.train()

    steps = [10, 15, 20, 30]
    events = read_events(kafka_bootstrap, topic, expected=6 * len(steps))
    assert callback.last_report.delivered == 6 * len(steps) and callback.last_report.spooled == 0
    assert len(events) == 6 * len(steps)
    assert len({e.event_id for e in events}) == len(events)
    assert sorted({e.step for e in events}) == steps

    rows_by_prompt = {r["prompt"]: (i, r) for i, r in enumerate(eval_rows)}
    by_prompt = defaultdict(dict)
    for e in events:
        source_index, row = rows_by_prompt[e.prompt]
        assert e.prompt_id == compute_prompt_id(None, row["prompt"])
        assert e.source_index == source_index and e.ground_truth == row["ground_truth"]
        assert 0 <= e.sample_index < 6
        assert (e.sample_source, e.sample_source_id) == ("dataset", "addition-eval")
        assert e.job_id == callback.job_id and e.model_name == MODEL_NAME
        assert e.generation.max_new_tokens == 4 and e.completion_tokens <= 4
        assert e.epoch >= 0
        by_prompt[e.prompt_id][e.step] = e.prediction
    assert len(by_prompt) == 6
    assert any(len(set(preds.values())) > 1 for preds in by_prompt.values()), "predictions never changed"
    job_file = json.loads((tmp_path / "run-out" / JOB_FILE).read_text())
    assert job_file["job_id"] == callback.job_id and callback.job_id.startswith("run-out-")
    assert callback._publisher is None  # the callback closed the publisher it created


def test_job_id_survives_a_resume_but_not_a_fresh_run_in_the_same_folder(tmp_path):
    def begin(global_step):
        cb = TrainingPredictionsCallback(dataset=addition_rows(10), n_samples=2, publisher=_FakePublisher())
        args = SimpleNamespace(output_dir=str(tmp_path / "out"), run_name=None)
        cb.on_train_begin(args, SimpleNamespace(global_step=global_step), None)
        return cb.job_id, cb.attempt

    first, attempt = begin(0)
    assert first.startswith("out-") and attempt == 0
    assert begin(120) == (first, 1)  # resumed from a checkpoint: same rows, newer attempt
    assert begin(130) == (first, 2)
    assert begin(0)[0] != first and begin(0)[1] == 0  # a new run


def test_every_event_carries_the_attempt_of_the_run(tmp_path):
    (tmp_path / JOB_FILE).write_text(json.dumps({"job_id": "job-7"}))  # as 0.1 wrote it
    fake = _FakePublisher()
    cb = TrainingPredictionsCallback(dataset=addition_rows(10), n_samples=2, publisher=fake, max_new_tokens=2)
    args = SimpleNamespace(output_dir=str(tmp_path), run_name=None)
    cb.on_train_begin(args, SimpleNamespace(global_step=40), None)
    tok = build_tokenizer()
    cb.on_evaluate(args, SimpleNamespace(global_step=50, epoch=1.0), None, model=build_model(tok), processing_class=tok)
    assert [(e.job_id, e.attempt) for e in fake.events] == [("job-7", 1)] * 2
    kept = json.loads((tmp_path / JOB_FILE).read_text())
    assert (kept["job_id"], kept["attempt"]) == ("job-7", 1)
    assert kept["sample_source_id"] == fake.events[0].sample_source_id  # fixed for the job's resumes


def test_a_custom_loop_sets_the_attempt_on_the_recorder():
    from predstream.producer import Generator, PredictionRecorder, sample_dataset

    samples = sample_dataset(addition_rows(10), 2, seed=1)
    with pytest.raises(ValueError, match="attempt"):
        PredictionRecorder(_FakePublisher(), Generator(max_new_tokens=2), samples, "j", attempt=-1)
    fake = _FakePublisher()
    recorder = PredictionRecorder(fake, Generator(max_new_tokens=2), samples, "j", attempt=3)
    tok = build_tokenizer()
    recorder.record(build_model(tok), tok, step=5)
    assert {e.attempt for e in fake.events} == {3}


def test_each_step_is_recorded_once_and_failures_do_not_stop_training(tmp_path, caplog):
    fake = _FakePublisher()
    cb = TrainingPredictionsCallback(
        dataset=addition_rows(20), n_samples=3, every_n_steps=2, job_id="job-1", publisher=fake, max_new_tokens=2
    )
    args = SimpleNamespace(output_dir=str(tmp_path), run_name=None)
    cb.on_train_begin(args, SimpleNamespace(global_step=0), None)
    tok = build_tokenizer()
    model = build_model(tok)
    model.train()
    for step in (1, 2, 2):
        state = SimpleNamespace(global_step=step, epoch=step / 10)
        cb.on_step_end(args, state, None, model=model, processing_class=tok)
        cb.on_evaluate(args, state, None, model=model, processing_class=tok)
    assert [e.step for e in fake.events] == [1, 1, 1, 2, 2, 2]
    assert model.training
    cb.on_evaluate(args, SimpleNamespace(global_step=3, epoch=0.3), None, model=model)  # no tokenizer
    assert "no tokenizer" in caplog.text and len(fake.events) == 6
    cb.on_train_end(args, None, None)
    assert fake.flushed and not fake.closed  # a publisher passed in belongs to the caller


def test_callback_needs_exactly_one_source_and_something_to_do():
    with pytest.raises(ValueError, match="exactly one"):
        TrainingPredictionsCallback()
    with pytest.raises(ValueError, match="nothing would be recorded"):
        TrainingPredictionsCallback(dataset=[{"prompt": "x"}], on_evaluate=False)


def test_callback_with_a_prediction_set_file_records_its_items_by_item_index(tmp_path):
    from predstream.producer import prediction_set_from_samples, sample_dataset
    from predstream.schemas import write_prediction_set_file

    pset = prediction_set_from_samples("adds-3", sample_dataset(addition_rows(30), 3, seed=9))
    path = write_prediction_set_file(pset, tmp_path / "adds-3.json")
    fake = _FakePublisher()
    cb = TrainingPredictionsCallback(prediction_set=path, job_id="job-ps", publisher=fake, max_new_tokens=2)
    args = SimpleNamespace(output_dir=str(tmp_path), run_name=None)
    cb.on_train_begin(args, SimpleNamespace(global_step=0), None)
    tok = build_tokenizer()
    cb.on_evaluate(args, SimpleNamespace(global_step=4, epoch=1.0), None, model=build_model(tok), processing_class=tok)
    assert [(e.sample_index, e.prompt_id, e.source_index) for e in fake.events] == [
        (s.item_index, s.prompt_id, s.source_index) for s in pset.items
    ]
    assert {(e.sample_source, e.sample_source_id) for e in fake.events} == {("prediction_set", pset.set_id)}
