"""A TypeScript developer uses the API's records: the types in predstream/web/types/predictions.ts
are generated from the event contract and the API's OpenAPI document (and kept so), they compile
with `tsc --strict`, they refuse what the contract refuses, and the example client built on them
records predictions through a live server into Postgres and reads them back."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from predstream.schemas import CURRENT_VERSION, load_schema
from predstream.web.typescript import DEFAULT_OUTPUT, render
from support.ts_kit import run_tsc, typescript_compiler

ROOT = Path(__file__).resolve().parent.parent
CLIENT_DIR = ROOT / "examples" / "ts-client"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def tsc() -> list[str]:
    return typescript_compiler()


def _project(tmp_path: Path, **files: str) -> Path:
    """A TypeScript project in ``tmp_path``: the generated types beside ``files``, strict settings."""
    shutil.copy(DEFAULT_OUTPUT, tmp_path / "predictions.ts")
    config = json.loads((CLIENT_DIR / "tsconfig.json").read_text(encoding="utf-8"))
    config["files"] = sorted(files)
    (tmp_path / "tsconfig.json").write_text(json.dumps(config), encoding="utf-8")
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("env, outcome", [
    ({"CI": "true"}, pytest.fail.Exception),
    ({"PREDSTREAM_REQUIRE_BROWSER": "1"}, pytest.fail.Exception),
    ({}, pytest.skip.Exception),
])
def test_without_npm_the_typescript_tests_fail_on_ci_and_skip_elsewhere(monkeypatch, env, outcome):
    import support.ts_kit as ts_kit

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PREDSTREAM_REQUIRE_BROWSER", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(ts_kit.shutil, "which", lambda name: None if name == "npm" else f"/usr/bin/{name}")
    with pytest.raises(outcome, match="npm is not installed"):
        typescript_compiler()


def test_the_checked_in_types_are_the_ones_the_contract_and_the_api_generate():
    checked_in = DEFAULT_OUTPUT.read_text(encoding="utf-8")
    assert render() == checked_in, (
        f"{DEFAULT_OUTPUT.relative_to(ROOT)} is out of date: run `python -m predstream.web.typescript` and commit it"
    )


def test_the_generator_says_when_the_checked_in_file_is_stale(tmp_path):
    stale = tmp_path / "predictions.ts"
    stale.write_text(DEFAULT_OUTPUT.read_text(encoding="utf-8").replace("sample_index: number;", "", 1))
    command = [sys.executable, "-m", "predstream.web.typescript"]
    check = subprocess.run([*command, "--check", "--out", str(stale)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "out of date" in check.stderr
    write = subprocess.run([*command, "--out", str(stale)], capture_output=True, text=True, timeout=120)
    assert write.returncode == 0, write.stderr
    assert stale.read_text(encoding="utf-8") == DEFAULT_OUTPUT.read_text(encoding="utf-8")


def test_the_example_client_compiles_with_tsc_strict(tsc):
    done = run_tsc(tsc, "--noEmit", "--strict", "-p", str(CLIENT_DIR))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_types_follow_the_avro_contract_and_leave_the_identity_optional(tsc, tmp_path):
    """Written from the .avsc, not from the generator: every field of the current Avro schema
    and no other is a key of PredictionEvent; a record without its identity is a TrainingPrediction."""
    fields = [f["name"] for f in load_schema(CURRENT_VERSION)["fields"]]
    every_key = ", ".join(f"{name}: true" for name in fields)
    project = _project(tmp_path, **{"good.ts": f"""
        import type {{ PredictionEvent, TrainingPrediction, PostPredictionsRequest, PostPredictionsAccepted,
                       PostPredictionsRejected, ApiGetResponses, PromptHistory }} from "./predictions.js";

        // exactly the Avro fields: a missing or an extra key does not compile
        export const keys: {{ [K in keyof PredictionEvent]-?: true }} = {{ {every_key} }};

        // the old system's record: no identity fields at all
        const legacy: TrainingPrediction = {{ job_id: "run-1", epoch: 0.5, step: 10, sample_index: 0,
                                             prompt: "2+2=", prediction: "4", ground_truth: "4" }};
        // ... or some of them, or null
        const identified: TrainingPrediction = {{ ...legacy, source_index: 7, sample_source: "dataset",
                                                 sample_source_id: null, prompt_id: undefined }};
        const chat: TrainingPrediction = {{ job_id: "run-1", epoch: 0, step: 1, sample_index: 1, prediction: "hi",
                                           messages: [{{ role: "user", content: "hello" }}] }};
        export const bodies: PostPredictionsRequest[] = [[legacy, identified], {{ predictions: [chat] }}];

        export function firstEventId(answer: PostPredictionsAccepted): string | undefined {{
          return answer.event_ids[0];
        }}
        export function badFields(answer: PostPredictionsRejected): (string | null)[] {{
          return answer.errors.map((problem) => problem.field);
        }}
        export function steps(history: ApiGetResponses["/api/v1/prompts/{{prompt_id}}"]): number[] {{
          const same: PromptHistory = history;
          return same.runs.flatMap((run) => run.points.map((point) => point.step));
        }}
        """})
    done = run_tsc(tsc, "--noEmit", "--strict", "-p", str(project))
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"source_index", "prompt_id", "sample_source", "sample_source_id", "attempt"} <= set(fields)


BAD_RECORDS = """
import type { PredictionEvent, TrainingPrediction, ApiGetResponses } from "./predictions.js";

const base = { job_id: "j", epoch: 0, step: 1, sample_index: 0 } as const;
export const noPrediction: TrainingPrediction = { ...base, prompt: "p" };  // ERROR
export const textIndex: TrainingPrediction = { ...base, prediction: "x", source_index: "3" };  // ERROR
export const badSource: TrainingPrediction = { ...base, prediction: "x", sample_source: "s3" };  // ERROR
export const unknownField: TrainingPrediction = { ...base, prediction: "x", created: 1 };  // ERROR
export const eventWithoutId: PredictionEvent = {  // ERROR
  ...base, prediction: "x", prompt_id: "a", sample_source: "dataset", produced_at: "2026-11-01T00:00:00Z" };
export type NoSuchRoute = ApiGetResponses["/api/v1/nowhere"];  // ERROR
"""


def test_the_types_refuse_a_record_the_contract_refuses(tsc, tmp_path):
    project = _project(tmp_path, **{"bad.ts": BAD_RECORDS})
    done = run_tsc(tsc, "--noEmit", "--strict", "-p", str(project))
    assert done.returncode != 0
    errors = {int(m.group(1)) for m in re.finditer(r"bad\.ts\((\d+),\d+\): error TS", done.stdout)}
    expected = {n for n, line in enumerate(BAD_RECORDS.splitlines(), 1) if line.endswith("// ERROR")}
    assert errors == expected and len(expected) == 6, done.stdout
    assert "'prediction' is missing" in done.stdout
    assert "'event_id' is missing" in done.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_the_example_client_records_predictions_through_a_live_server_and_reads_them_back(
    tsc, tmp_path, consumer_settings, database_url, kafka_bootstrap, topic, monkeypatch
):
    from predstream.web import ServeSettings, start_server
    from support import wait_for
    from support.consumer_kit import count_rows, worker_thread

    out = tmp_path / "js"
    done = run_tsc(tsc, "-p", str(CLIENT_DIR), "--noEmit", "false", "--outDir", str(out), "--rootDir", str(ROOT))
    assert done.returncode == 0, done.stdout + done.stderr
    driver = tmp_path / "driver.cjs"
    driver.write_text(textwrap.dedent("""
        const { PredstreamClient, PredstreamError, legacyRecord } = require(process.argv[2]);
        const [url, token] = process.argv.slice(3);
        (async () => {
          const client = new PredstreamClient(url, token);
          const accepted = await client.record([
            legacyRecord("ts-run", 5, 0, "what is 1 + 1?", "2", "2"),
            { ...legacyRecord("ts-run", 5, 1, "what is 2 + 2?", "5", "4"), source_index: 41 },
          ]);
          let refused = null;
          try {
            await client.record([legacyRecord("ts-run", 6, 0, "p", "x"), legacyRecord("ts-run", -1, 1, "p", "x")]);
          } catch (err) {
            if (!(err instanceof PredstreamError)) throw err;
            refused = { status: err.status, problems: err.problems };
          }
          let history = null;
          for (let i = 0; i < 300 && history === null; i++) {
            try {
              history = await client.get("/api/v1/prompts/{prompt_id}", { prompt_id: accepted.prompt_ids[1] });
            } catch (err) {
              if (!(err instanceof PredstreamError) || err.status !== 404) throw err;
              await new Promise((resolve) => setTimeout(resolve, 100));
            }
          }
          console.log(JSON.stringify({ accepted, refused, history }));
        })().catch((err) => { console.error(err); process.exit(1); });
        """), encoding="utf-8")
    monkeypatch.setenv("PREDSTREAM_SPOOL_DIR", str(tmp_path / "spool"))
    settings = ServeSettings(database_url=database_url, kafka_bootstrap=kafka_bootstrap, topic=topic,
                             web_port=0, web_token="ts-client-token")
    with worker_thread(consumer_settings), start_server(settings) as server:
        node = subprocess.run(["node", str(driver), str(out / "examples" / "ts-client" / "client.js"), server.url,
                               "ts-client-token"], capture_output=True, text=True, timeout=90, check=False)
        assert node.returncode == 0, node.stderr
        result = json.loads(node.stdout)
        wait_for(lambda: count_rows(database_url) >= 2, what="the two recorded rows")
    accepted, refused, history = result["accepted"], result["refused"], result["history"]
    assert accepted["accepted"] == 2 and len(set(accepted["event_ids"])) == 2 and accepted["topic"] == topic
    assert refused == {"status": 422, "problems": [
        {"index": 1, "field": "step", "reason": "out-of-range:step",
         "message": "step: Input should be greater than or equal to 0"}]}
    assert history is not None, "GET /api/v1/prompts/{prompt_id} never found the recorded prompt"
    assert history["prompt"]["prompt"] == "what is 2 + 2?" and history["prompt"]["source_index"] == 41
    assert [(r["job_id"], [(p["step"], p["prediction"]) for p in r["points"]]) for r in history["runs"]] == [
        ("ts-run", [(5, "5")])]
    assert count_rows(database_url) == 2  # nothing of the refused request
