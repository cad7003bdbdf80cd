"""Journeys of someone whose database predates predstream, driven through the `predstream` command.

Each journey runs the installed command in a subprocess against a real Postgres and checks what
the user sees: exit codes, messages, what `compare` prints, how many rows the table holds.
The old writer's rows are written with its own INSERT, as it still does in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration

_MIGRATIONS_0_1 = Path(__file__).resolve().parent.parent / "data" / "migrations_0_1"
_OLD_INSERT = ("INSERT INTO training_predictions (job_id, epoch, step, sample_index, prompt, ground_truth, prediction)"
               " VALUES (%s, 0, %s, %s, %s, %s, %s)")
_PROMPTS = [("12+34=", "46"), ("50+5=", "55"), ("7+8=", "15")]


def predstream(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREDSTREAM_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "predstream", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def old_writer(url: str, job: str, answers: dict[int, list[str]]) -> None:
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(_OLD_INSERT, [
            (job, step, i, prompt, gt, pred)
            for step, preds in answers.items()
            for i, ((prompt, gt), pred) in enumerate(zip(_PROMPTS, preds, strict=True))
        ])


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM training_predictions").fetchone()[0]


def test_upgrading_a_0_1_database_then_identify_puts_the_old_runs_into_compare(empty_database_url):
    url = empty_database_url
    first = predstream(url, "migrate", "--migrations-dir", str(_MIGRATIONS_0_1))  # what predstream 0.1 applied
    assert first.returncode == 0, first.stderr
    old_writer(url, "old-run", {100: ["46", "5", "1"], 200: ["46", "55", "15"]})
    old_writer(url, "new-run", {100: ["4", "55", "15"]})  # (identified the same way; any job works)

    upgrade = predstream(url, "migrate")
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.startswith("applied: ")
    assert "0007_concurrent_indexes" in upgrade.stdout and "0008_prompt_history_index" in upgrade.stdout

    before = predstream(url, "compare", "old-run", "new-run", "--format", "json")
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["predictions"] == []  # no prompt_id yet: nothing to match

    identify = predstream(url, "identify")
    assert identify.returncode == 0, identify.stderr
    assert "9 row(s) without identity examined: 9 identified, 0 duplicate(s)" in identify.stdout
    assert "identify: 9 of 9 rows without identity examined (100%)" in identify.stderr

    after = predstream(url, "compare", "old-run", "new-run", "--format", "json", "--prompts", "3")
    assert after.returncode == 0, after.stderr
    shown = {(r["prompt"], r["job_id"], r["step"]): (r["prediction"], r["is_correct"])
             for r in json.loads(after.stdout)["predictions"]}
    assert {prompt for prompt, _, _ in shown} == {p for p, _ in _PROMPTS}
    assert shown[("50+5=", "old-run", 100)] == ("5", False)
    assert shown[("50+5=", "old-run", 200)] == ("55", True)
    assert shown[("50+5=", "new-run", 100)] == ("55", True)

    again = predstream(url, "identify")
    assert again.returncode == 0 and "0 row(s) without identity examined" in again.stdout


def test_backfilling_an_export_of_the_old_table_into_the_same_database_twice_adds_nothing(database_url, tmp_path):
    url = database_url
    old_writer(url, "old-run", {100: ["46", "5", "1"], 200: ["46", "55", "15"]})
    export = tmp_path / "old-table.jsonl"
    with psycopg.connect(url) as conn:  # the user's export: psql -c "SELECT row_to_json(t) FROM training_predictions t"
        rows = conn.execute("SELECT row_to_json(t)::text FROM training_predictions t")
        export.write_text("".join(r[0] + "\n" for r in rows))

    for _ in range(2):
        loaded = predstream(url, "backfill", str(export))
        assert loaded.returncode == 0, loaded.stderr
        assert "read 6, inserted 0, updated 0, unchanged 6, invalid 0, rejected 0" in loaded.stdout
        assert count(url) == 6


def test_identify_names_an_old_row_whose_prompt_id_is_not_its_prompts_and_exits_1(database_url):
    url = database_url
    old_writer(url, "old-run", {100: ["46", "5", "1"]})
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE training_predictions SET prompt_id = repeat('ab', 32) WHERE prompt = '7+8='")

    result = predstream(url, "identify")
    assert result.returncode == 1
    assert "not identified: row" in result.stderr and "(job old-run, step 100, sample 2)" in result.stderr
    assert "(identity-mismatch)" in result.stderr
    assert "3 row(s) without identity examined: 2 identified, 0 duplicate(s) left without event_id" in result.stdout
    assert "1 not identified" in result.stdout


def test_a_database_the_old_writer_filled_is_migrated_then_identified(empty_database_url):
    url = empty_database_url
    with psycopg.connect(url) as conn:  # the old writer's own table, never touched by predstream
        conn.execute("""CREATE TABLE training_predictions (
            id BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0, step INTEGER NOT NULL,
            sample_index INTEGER NOT NULL, prompt TEXT NOT NULL, ground_truth TEXT, prediction TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now())""")
    old_writer(url, "old-run", {100: ["46", "5", "1"]})

    too_early = predstream(url, "identify")
    assert too_early.returncode == 2
    assert too_early.stderr.strip().endswith("run `predstream migrate` first")

    migrated = predstream(url, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    identify = predstream(url, "identify")
    assert identify.returncode == 0, identify.stderr
    assert "3 row(s) without identity examined: 3 identified" in identify.stdout
    old_writer(url, "old-run", {200: ["46", "55", "15"]})  # the old writer still writes: run it again later
    assert "3 row(s) without identity examined: 3 identified" in predstream(url, "identify").stdout
