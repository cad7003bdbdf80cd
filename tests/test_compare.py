"""`predstream compare`: the same prompt_id across runs and steps, and accuracy per step."""

from __future__ import annotations

import csv
import io
import json

import psycopg
import pytest
from typer.testing import CliRunner

from predstream.cli import app
from predstream.consumer.compare import compare_runs
from predstream.consumer.settings import ConsumerSettings
from predstream.report import plot_comparison
from predstream.schemas import compute_prompt_id

pytestmark = pytest.mark.integration

_PROMPTS = [("12+34=", "46"), ("50+5=", "55"), ("7+8=", "15")]


def _seed(url: str) -> None:
    rows = []
    for job, answers in (("run-a", {0: ["1", "1", "1"], 10: ["46", "5", "15"], 20: ["46", "55", "15"]}),
                         ("run-b", {0: ["9", "9", "9"], 10: ["4", "5", "1"], 20: ["46", "50", "15"]})):
        for step, preds in answers.items():
            for i, ((prompt, gt), pred) in enumerate(zip(_PROMPTS, preds, strict=True)):
                rows.append((job, step, i, prompt, gt, pred, compute_prompt_id(None, prompt), i, f"{job}-{step}-{i}"))
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            """INSERT INTO training_predictions (job_id, step, sample_index, prompt, ground_truth, prediction,
                                                prompt_id, source_index, event_id, sample_source)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'dataset')""",
            rows,
        )


def test_compare_shows_each_prompt_across_steps_and_runs(database_url, tmp_path):
    _seed(database_url)
    result = compare_runs(ConsumerSettings(database_url=database_url), ["run-a", "run-b"], max_prompts=2)
    assert [p.source_index for p in result.prompts] == [0, 1]
    first = result.prompts[0]
    assert first.prompt_id == compute_prompt_id(None, "12+34=")
    assert first.steps == [0, 10, 20]
    assert first.predictions["run-a"][10] == ("46", True)
    assert first.predictions["run-b"][10] == ("4", False)
    assert result.accuracy["run-a"][20][0] == 1.0
    assert result.accuracy["run-b"][20][:2] == (pytest.approx(2 / 3, abs=1e-4), 2)
    png = plot_comparison(result, tmp_path / "acc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_compare_command_formats(database_url, fmt):
    _seed(database_url)
    result = CliRunner().invoke(app, ["compare", "run-a", "run-b", "--format", fmt, "--database-url", database_url])
    assert result.exit_code == 0, result.output
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(result.output)))
        assert len(rows) == 2 * 3 * 3 and {r["job_id"] for r in rows} == {"run-a", "run-b"}
    elif fmt == "json":
        doc = json.loads(result.output)
        assert doc["jobs"] == ["run-a", "run-b"] and len(doc["accuracy"]) == 6
    else:
        assert "12+34=" in result.output and "run-b" in result.output and "accuracy" in result.output


def test_compare_one_prompt_only(database_url):
    _seed(database_url)
    pid = compute_prompt_id(None, "7+8=")
    result = CliRunner().invoke(app, ["compare", "run-a", "--prompt-id", pid, "--format", "json", "--database-url",
                                      database_url])
    doc = json.loads(result.output)
    assert {r["prompt_id"] for r in doc["predictions"]} == {pid}


def test_compare_unknown_job_says_so(database_url):
    result = CliRunner().invoke(app, ["compare", "nope", "--database-url", database_url])
    assert result.exit_code == 1
