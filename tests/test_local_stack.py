"""The README's first steps: `predstream up`, `migrate`, an event through the stack, `down`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from predstream.schemas import Decoder, PredictionEvent, SingleObjectEncoder, message_key

pytestmark = pytest.mark.integration

_CLI = [sys.executable, "-m", "predstream"]


def _run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_CLI + args, env=env, capture_output=True, text=True, timeout=timeout)


def _processes_under(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(home) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def cli_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    env["PREDSTREAM_HOME"] = str(tmp_path / "home")
    yield env
    subprocess.run(_CLI + ["down"], env=env, capture_output=True, timeout=60)


@pytest.mark.slow
def test_up_prints_addresses_migrate_is_idempotent_and_down_leaves_nothing(cli_env, tmp_path):
    start = time.monotonic()
    up = _run(["up"], cli_env)
    took = time.monotonic() - start
    assert up.returncode == 0, up.stderr
    assert took < 30
    bootstrap = re.search(r"PREDSTREAM_KAFKA_BOOTSTRAP=(\S+)", up.stdout).group(1)
    db_url = re.search(r"PREDSTREAM_DATABASE_URL=(\S+)", up.stdout).group(1)
    assert db_url.startswith("postgresql://")

    # other commands find the stack without any environment
    assert _run(["status"], cli_env).returncode == 0
    again = _run(["migrate"], cli_env)
    assert again.returncode == 0 and "nothing to apply" in again.stdout

    # an event produced and consumed through the local stack
    from confluent_kafka import Consumer, Producer

    topic = "training.predictions"
    event = PredictionEvent.create(job_id="stack", epoch=0.0, step=1, sample_index=0, prompt="hi",
                                   prediction="hello", sample_source="dataset", source_index=0)
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, SingleObjectEncoder().encode(event), key=message_key(event.prompt_id))
    assert p.flush(15) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g" + uuid.uuid4().hex, "auto.offset.reset": "earliest",
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    c.subscribe([topic])
    got = None
    deadline = time.monotonic() + 30
    while got is None and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            got = Decoder().decode(msg.value())
    c.close()
    assert got == event

    # the topic is as the design asks: >= 6 partitions, and a DLQ
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert len(md.topics[topic].partitions) >= 6
    assert "training.predictions.dlq" in md.topics

    port = int(bootstrap.rsplit(":", 1)[1])
    pg_port = int(re.search(r":(\d+)/", db_url).group(1))
    down = _run(["down"], cli_env)
    assert down.returncode == 0 and "stopped" in down.stdout
    time.sleep(0.5)
    assert _processes_under(tmp_path / "home") == []
    assert not _listening(port) and not _listening(pg_port)
    status = _run(["status"], cli_env)
    assert status.returncode == 1


def test_a_bad_setting_stops_the_command_with_one_line(cli_env):
    cli_env["PREDSTREAM_KAFKA_OPTIONS"] = "linger.ms=not-a-number"
    result = _run(["migrate", "--dry-run"], cli_env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "PREDSTREAM_KAFKA_OPTIONS" in lines[0]


def test_without_settings_or_stack_the_error_says_what_to_do(cli_env):
    result = _run(["migrate"], cli_env)
    assert result.returncode == 2
    assert "predstream up" in result.stderr and "PREDSTREAM_DATABASE_URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_configured_database_is_used_and_nothing_local_starts(cli_env, empty_database_url, tmp_path):
    cli_env["PREDSTREAM_DATABASE_URL"] = empty_database_url
    result = _run(["migrate"], cli_env)
    assert result.returncode == 0, result.stderr
    assert "applied: 0001_training_predictions" in result.stdout
    assert not (tmp_path / "home" / "stack.json").exists()
    assert _processes_under(tmp_path / "home") == []


def _pretend_stack_runs(home: Path, bootstrap: str, database_url: str) -> None:
    """A stack.json as `predstream up` writes it, its "processes" this test's own."""
    import json

    home.mkdir(parents=True, exist_ok=True)
    (home / "stack.json").write_text(json.dumps({"bootstrap": bootstrap, "database_url": database_url,
                                                 "pids": {"broker": os.getpid(), "postgres": os.getpid()}}))


def test_a_command_uses_the_running_stack_unless_the_environment_or_a_flag_says_otherwise(
        tmp_path, monkeypatch, kafka_bootstrap, database_url, empty_database_url):
    from typer.testing import CliRunner

    from predstream.cli import app

    monkeypatch.setenv("PREDSTREAM_HOME", str(tmp_path / "home"))
    _pretend_stack_runs(tmp_path / "home", kafka_bootstrap, database_url)
    runner = CliRunner()
    found = runner.invoke(app, ["migrate", "--dry-run"])  # the stack's database is migrated
    assert found.exit_code == 0 and found.stdout.strip() == "nothing to apply", found.output

    monkeypatch.setenv("PREDSTREAM_DATABASE_URL", empty_database_url)  # the environment wins over the stack
    from_env = runner.invoke(app, ["migrate", "--dry-run"])
    assert from_env.exit_code == 0 and "0001_training_predictions" in from_env.stdout, from_env.output

    from_flag = runner.invoke(app, ["migrate", "--dry-run", "--database-url", database_url])  # a flag wins over both
    assert from_flag.exit_code == 0 and from_flag.stdout.strip() == "nothing to apply", from_flag.output

    bad = runner.invoke(app, ["replay", "--batch-size", "0", "--no-progress"])  # bounds live in the settings
    assert bad.exit_code == 2
    assert bad.stderr.strip().startswith("error: bad --batch-size:") and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.train
def test_the_training_callback_finds_the_running_stack_by_itself(tmp_path, monkeypatch, kafka_bootstrap, database_url):
    from types import SimpleNamespace

    from predstream import TrainingPredictionsCallback

    monkeypatch.setenv("PREDSTREAM_HOME", str(tmp_path / "home"))
    _pretend_stack_runs(tmp_path / "home", kafka_bootstrap, database_url)
    callback = TrainingPredictionsCallback(dataset=[{"prompt": "1+1=", "ground_truth": "2"}], n_samples=1)
    args, state = SimpleNamespace(output_dir=str(tmp_path / "out"), run_name="r"), SimpleNamespace(global_step=0)
    callback.on_train_begin(args, state, None)
    try:
        assert callback.settings is not None
        assert (callback.settings.kafka_bootstrap, callback.settings.database_url) == (kafka_bootstrap, database_url)
        assert callback.settings.spool_dir == tmp_path / "home" / "spool"
    finally:
        callback.on_train_end(args, state, None)
    assert callback.last_report is not None and callback.last_report.dropped == 0
