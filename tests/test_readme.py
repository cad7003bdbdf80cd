"""The README, followed literally: its commands parse or run, its snippets run, every setting is documented."""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from predstream.cli import app

_README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _README, flags=re.S)


def _predstream_lines() -> list[list[str]]:
    lines = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("predstream "):
                lines.append(shlex.split(line)[1:])
    return lines


def test_the_first_screen_gives_the_main_job_and_the_test_command():
    first_screen = _README[: _README.index("## Contents")]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in first_screen
    assert "predstream demo" in first_screen


def test_every_setting_of_both_sides_is_in_the_configuration_table():
    from predstream.consumer.settings import ConsumerSettings
    from predstream.producer.settings import ProducerSettings

    for model in (ConsumerSettings, ProducerSettings):
        for name in model.model_fields:
            assert f"`PREDSTREAM_{name.upper()}`" in _README, name


def test_every_predstream_command_in_the_readme_parses():
    runner = CliRunner()
    lines = _predstream_lines()
    assert len(lines) >= 15
    for args in lines:
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, f"predstream {' '.join(args)}: {result.output}"


def test_the_trainer_snippet_compiles_against_the_public_api():
    snippet = next(b for b in _blocks("python") if "TrainingPredictionsCallback(" in b)
    compile(snippet, "README", "exec")
    from predstream import producer

    assert "TrainingPredictionsCallback" in producer.__all__


@pytest.mark.integration
@pytest.mark.train
def test_the_custom_loop_snippet_runs_and_its_events_arrive(producer_settings, kafka_bootstrap, topic, monkeypatch):
    from confluent_kafka import Consumer

    from predstream.schemas import Decoder
    from predstream.tinymodel import addition_rows, build_model, build_tokenizer

    monkeypatch.setenv("PREDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("PREDSTREAM_TOPIC", topic)
    monkeypatch.setenv("PREDSTREAM_SPOOL_DIR", str(producer_settings.spool_dir))
    tokenizer = build_tokenizer()
    snippet = next(b for b in _blocks("python") if "PredictionRecorder(" in b)
    scope = {"eval_rows": addition_rows(40, seed=5), "model": build_model(tokenizer), "tokenizer": tokenizer}
    exec(compile(snippet, "README", "exec"), scope)

    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while len(seen) < 16 and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            event = Decoder().decode(msg.value())
            assert event.job_id == "my-run-1"
            seen.add(event.event_id)
    c.close()
    assert len(seen) == 16  # 8 prompts x 2 steps


@pytest.mark.integration
def test_the_prediction_set_commands_run_as_written(database_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREDSTREAM_DATABASE_URL", database_url)
    (tmp_path / "data").mkdir()
    rows = [{"prompt": f"{i}+{i}=", "ground_truth": str(2 * i)} for i in range(80)]
    (tmp_path / "data" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    for args in _predstream_lines():
        if args[0] == "sets":
            result = runner.invoke(app, args)
            assert result.exit_code == 0, f"predstream {' '.join(args)}: {result.output}"
    exported = json.loads((tmp_path / "arithmetic-hard.json").read_text())
    assert exported["name"] == "arithmetic-hard" and len(exported["items"]) == 50
