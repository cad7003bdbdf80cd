"""The job file keeps the job id and the attempt counter across resumes (producer.jobfile)."""

from __future__ import annotations

import json
from itertools import count

from predstream.producer.jobfile import JOB_FILE, settle_dataset_id, settle_job

_ids = count()


def _begin(folder, *, resumed: bool, job_id: str | None = None) -> tuple[str, int]:
    return settle_job(folder, resumed=resumed, job_id=job_id, new_job_id=lambda: f"new-{next(_ids)}")


def test_a_fresh_job_is_attempt_0_and_each_resume_bumps_it(tmp_path):
    job, attempt = _begin(tmp_path, resumed=False)
    assert attempt == 0
    assert _begin(tmp_path, resumed=True) == (job, 1)
    assert _begin(tmp_path, resumed=True) == (job, 2)
    assert json.loads((tmp_path / JOB_FILE).read_text()) == {"job_id": job, "attempt": 2}
    fresh, attempt = _begin(tmp_path, resumed=False)  # a new run in the same folder: a new job
    assert fresh != job and attempt == 0


def test_a_job_file_written_by_0_1_is_read_as_attempt_0_then_bumped(tmp_path):
    (tmp_path / JOB_FILE).write_text(json.dumps({"job_id": "run-20261001T000000Z-abcdef"}) + "\n")
    assert _begin(tmp_path, resumed=True) == ("run-20261001T000000Z-abcdef", 1)


def test_keys_it_does_not_know_are_kept_while_the_job_goes_on(tmp_path):
    (tmp_path / JOB_FILE).write_text(json.dumps({"job_id": "j", "attempt": 4, "sample_source_id": "ds-1",
                                                 "future": {"x": [1]}}))
    assert _begin(tmp_path, resumed=True) == ("j", 5)
    assert json.loads((tmp_path / JOB_FILE).read_text()) == {
        "job_id": "j", "attempt": 5, "sample_source_id": "ds-1", "future": {"x": [1]}}
    _begin(tmp_path, resumed=False)  # a new job: the old job's entries go
    assert set(json.loads((tmp_path / JOB_FILE).read_text())) == {"job_id", "attempt"}


def test_a_job_id_given_by_the_user_counts_its_attempts_too(tmp_path):
    assert _begin(tmp_path, resumed=False, job_id="mine") == ("mine", 0)
    assert _begin(tmp_path, resumed=False, job_id="mine") == ("mine", 1)  # started over: newer rows
    assert _begin(tmp_path, resumed=True, job_id="mine") == ("mine", 2)
    assert _begin(tmp_path, resumed=True, job_id="other") == ("other", 0)


def test_an_unreadable_or_odd_job_file_does_not_stop_training(tmp_path, caplog):
    path = tmp_path / JOB_FILE
    path.write_text("{not json")
    job, attempt = _begin(tmp_path, resumed=True)
    assert job.startswith("new-") and attempt == 0 and "cannot read" in caplog.text
    path.write_text(json.dumps({"job_id": "j", "attempt": "three"}))
    assert _begin(tmp_path, resumed=True) == ("j", 1)
    assert "not a whole number" in caplog.text


def test_an_unwritable_folder_still_gives_a_job(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    job, attempt = _begin(blocker / "out", resumed=False)
    assert job.startswith("new-") and attempt == 0 and "cannot write" in caplog.text


def test_the_dataset_id_of_a_jobs_first_start_is_kept_for_its_resumes(tmp_path):
    _begin(tmp_path, resumed=False)
    assert settle_dataset_id(tmp_path, lambda: "/old/eval.jsonl") == "/old/eval.jsonl"
    _begin(tmp_path, resumed=True)  # a resume keeps the file's other keys
    assert settle_dataset_id(tmp_path, lambda: "/new/eval.jsonl") == "/old/eval.jsonl"
    _begin(tmp_path, resumed=False)  # a new job in the same folder starts a new file
    assert settle_dataset_id(tmp_path, lambda: "/new/eval.jsonl") == "/new/eval.jsonl"
