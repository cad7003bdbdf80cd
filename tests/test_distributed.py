"""Two ranks on CPU (torch.distributed, gloo): each prompt recorded once per evaluation,
the same events as a one-process run, and no hang."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from predstream.schemas import event_id  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.integration, pytest.mark.slow]

from support import dist_worker as worker  # noqa: E402
from support.consumer_kit import read_events  # noqa: E402

HERE = Path(__file__).parent

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(mode: str, bootstrap: str, topic: str, tmp_path: Path, timeout: float = 150) -> list[dict]:
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "LOCAL_WORLD_SIZE": str(WORLD),
            "OMP_NUM_THREADS": "1",
            # the checkout's code, whatever the installed copy is
            "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
        }
        cmd = [sys.executable, str(HERE / "support" / "dist_worker.py"), mode, bootstrap, topic,
               str(tmp_path / "spool"), str(tmp_path)]
        log = open(tmp_path / f"rank{rank}.log", "w")
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                       cwd=HERE.parent), log))
    try:
        for proc, _ in procs:
            proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the two-rank {mode} run hung (> {timeout:.0f} s):\n" + _logs(tmp_path))
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
    assert all(proc.returncode == 0 for proc, _ in procs), _logs(tmp_path)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- rank {r}\n" + (tmp_path / f"rank{r}.log").read_text()[-3000:] for r in range(WORLD))


def _one_process_event_ids(job_id: str, steps) -> list[str]:
    samples = worker.samples()
    return [
        event_id(
            job_id=job_id, step=step, sample_source=s.sample_source, sample_source_id=s.sample_source_id,
            source_index=s.source_index, sample_index=s.sample_index, prompt_id=s.prompt_id,
        )
        for step in steps
        for s in samples
    ]


def test_two_ranks_with_the_recorder_publish_the_one_process_events_once_each(kafka_bootstrap, topic, tmp_path):
    from predstream.producer import Generator, PredictionRecorder
    from predstream.tinymodel import build_model, build_tokenizer

    results = _run_ranks("recorder", kafka_bootstrap, topic, tmp_path)
    n = worker.N_SAMPLES * len(worker.STEPS)
    events = read_events(kafka_bootstrap, topic, expected=n)

    # what one process records with the same samples, model and settings
    class _Keep(list):
        def publish_many(self, evs):
            self.extend(evs)

    tok = build_tokenizer()
    solo = _Keep()
    recorder = PredictionRecorder(solo, Generator(max_new_tokens=3, batch_size=2), worker.samples(), "dist-job",
                                  rank=0, world_size=1)
    for step in worker.STEPS:
        recorder.record(build_model(tok, seed=0), tok, step=step, epoch=step / 10)

    assert sorted(e.event_id for e in events) == sorted(e.event_id for e in solo)
    assert Counter(e.event_id for e in events).most_common(1)[0][1] == 1
    by_id = {e.event_id: e for e in solo}
    for e in events:  # identity and content equal the one-process event's
        ref = by_id[e.event_id]
        keys = ("job_id", "step", "epoch", "sample_index", "source_index", "prompt_id", "prompt", "ground_truth",
                "sample_source", "sample_source_id", "prediction", "prompt_tokens", "completion_tokens")
        assert {k: getattr(e, k) for k in keys} == {k: getattr(ref, k) for k in keys}
    # rank r recorded samples[r::2]: 4 and 3 prompts per step
    assert sorted(len(r["event_ids"]) for r in results) == [3 * len(worker.STEPS), 4 * len(worker.STEPS)]
    assert sum(r["delivered"] for r in results) == n and all(r["spooled"] == 0 for r in results)


def test_two_ranks_under_the_trainer_share_one_job_id_and_record_each_prompt_once(kafka_bootstrap, topic, tmp_path):
    results = _run_ranks("trainer", kafka_bootstrap, topic, tmp_path)
    job_ids = {r["job_id"] for r in results}
    assert len(job_ids) == 1, f"ranks disagree on the job id: {job_ids}"
    assert {r["attempt"] for r in results} == {0}, "ranks disagree on the attempt"
    job_id = job_ids.pop()
    steps = (5, 10)  # eval_steps=5, max_steps=10
    expected = _one_process_event_ids(job_id, steps)
    events = read_events(kafka_bootstrap, topic, expected=len(expected))
    assert sorted(e.event_id for e in events) == sorted(expected)
    assert {e.job_id for e in events} == {job_id}
    assert sum(r["delivered"] for r in results) == len(expected)
