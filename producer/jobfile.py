"""The job file, ``<output_dir>/predstream-job.json``: what a training run keeps across resumes.

It is one JSON object::

    {"job_id": "run-out-20261103T140000Z-1a2b3c", "attempt": 2, ...}

* ``job_id``: the run's job id. A run resumed from a checkpoint reuses it, so a step it
  regenerates has the same ``event_id`` and lands on the same row.
* ``attempt``: the job's attempt counter, bumped at every train begin. A fresh run (a new
  job) starts at 0; a resumed run takes the file's value + 1; a run given the job id of the
  file (``job_id=``) also takes + 1, whether it resumes or starts over. Every event carries
  it, and of two events with the same ``event_id`` the higher attempt wins, then the later
  ``produced_at``: a resumed run replaces its first attempt's rows even when its host's
  clock is behind.

* ``sample_source_id``: the eval dataset's id, fixed when the job first starts
  (:func:`settle_dataset_id`). A resumed run reuses it, so the same dataset given under
  another path (``eval.jsonl`` then ``/abs/eval.jsonl``, or a checkout moved to another
  host) keeps its events' ``event_id`` and lands on the same rows.

A 0.1 job file (``{"job_id": ...}``, no ``attempt``) reads as attempt 0, so its first resume
is attempt 1. Keys this module does not know are written back as they were read, so other
parts of predstream (and other versions) can keep their own entries in the same file; a
new job starts a new file. The file is replaced atomically (written aside, then renamed).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["JOB_FILE", "MAX_ATTEMPT", "JobFile", "settle_job", "settle_dataset_id"]

_log = logging.getLogger(__name__)

#: File in ``args.output_dir`` that keeps the job id and the attempt counter.
JOB_FILE = "predstream-job.json"
#: Largest attempt (the event's and the table's 32-bit integer).
MAX_ATTEMPT = 2**31 - 1


@dataclass
class JobFile:
    """The job file's content. ``data`` holds every key, the unknown ones included."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def job_id(self) -> str | None:
        value = self.data.get("job_id")
        return value if isinstance(value, str) and value else None

    @property
    def attempt(self) -> int:
        """The stored attempt; 0 when absent (a 0.1 file) or unusable (with a warning)."""
        value = self.data.get("attempt", 0)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ATTEMPT:
            return value
        _log.warning("%s: attempt %r is not a whole number >= 0; counting from 0", self.path, value)
        return 0

    @classmethod
    def read(cls, path: Path) -> JobFile | None:
        """The file at ``path``, or ``None`` when there is none or it is not a JSON object."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            _log.warning("cannot read %s (%s); it is ignored", path, exc)
            return None
        if not isinstance(data, dict):
            _log.warning("%s is not a JSON object; it is ignored", path)
            return None
        return cls(path, data)

    def write(self) -> bool:
        """Replace the file atomically; ``False`` (and a warning) when it cannot be written."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.data) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
            return True
        except OSError as exc:
            _log.warning("cannot write %s (%s): a resumed run will not find this job id and attempt", self.path, exc)
            try:
                tmp.unlink()
            except OSError:
                pass
            return False


def settle_job(output_dir: str | Path, *, resumed: bool, job_id: str | None,
               new_job_id: Callable[[], str]) -> tuple[str, int]:
    """Settle ``(job_id, attempt)`` for a train begin and record them in the job file.

    ``resumed``: the run starts from a checkpoint (``global_step > 0``). ``job_id``: the one
    the user chose, if any. ``new_job_id()`` makes a fresh one. See the module docstring.
    """
    path = Path(output_dir) / JOB_FILE
    found = JobFile.read(path)
    stored = found.job_id if found is not None else None
    continues = stored is not None and (job_id == stored if job_id is not None else resumed)
    if continues:
        assert found is not None and stored is not None
        attempt = min(found.attempt + 1, MAX_ATTEMPT)
        job = found
        _log.info("job %s continues in %s: attempt %d", stored, path, attempt)
    else:
        if resumed and job_id is None:
            _log.warning("resumed run but %s holds no job id; starting a new job id", path)
        attempt = 0
        job = JobFile(path)  # a new job: the previous job's entries do not apply to it
        stored = job_id or new_job_id()
    job.data["job_id"] = stored
    job.data["attempt"] = attempt
    job.write()
    return stored, attempt


def settle_dataset_id(output_dir: str | Path, compute: Callable[[], str]) -> str:
    """The job's dataset id: the one kept in the job file, else ``compute()`` (then kept).

    Call it after :func:`settle_job`, which starts a new file for a new job, so a new job
    always computes its own id and a continued one reuses the id of its first start.
    """
    path = Path(output_dir) / JOB_FILE
    job = JobFile.read(path) or JobFile(path)
    stored = job.data.get("sample_source_id")
    if isinstance(stored, str) and stored:
        return stored
    value = compute()
    job.data["sample_source_id"] = value
    job.write()
    return value
