"""The benchmark runner still runs: every benchmark, at the smoke size, against a real stack.

Timed figures are not checked against their targets here (a shared CI machine is no place
for timings; docs/performance.md has the figures of a full run); only that every figure is
written, and the one exact figure: a second replay pass adds no row.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPECTED = {
    "training_cost": {"publish() / row-per-transaction", "publish(): median per event", "broker down / broker up"},
    "sink_throughput": {"raw COPY, text", "raw COPY, binary", "sink only / raw COPY",
                        "consumer, 1 worker / raw COPY", "consumer, 2 workers / raw COPY",
                        "consumer, 2 workers: CPU per event, workers", "consumer, 2 workers: CPU per event, database",
                        "consumer, 2 workers: CPU per event, broker"},
    "latency": {"latency p50", "latency p99"},
    "replay": {"replay rate (first pass)", "rows added by the second pass"},
    "generation": {"CPU: batch 32 / one at a time"},
    "identity": {"plain prompt: decode + validate, without the check",
                 "plain prompt: decode + validate, with the check",
                 "plain prompt: added by the check", "chat messages: added by the check"},
}


def test_benchmark_runner_writes_every_figure_at_smoke_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--size", "smoke", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["size"] == "smoke"
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["python"]
    assert set(report["benchmarks"]) == set(EXPECTED)
    for name, bench in report["benchmarks"].items():
        assert bench["error"] is None, f"{name}: {bench['error']}\n{bench['details'].get('traceback', '')}"
        figures = {f["name"]: f for f in bench["figures"]}
        assert EXPECTED[name] <= set(figures), f"{name} lacks {EXPECTED[name] - set(figures)}"
        for fig in figures.values():
            assert math.isfinite(fig["value"]), f"{name}: {fig['name']} is {fig['value']}"
            assert (fig["target"] is None) == (fig["passed"] is None)
    # the one exact figure: a second replay pass adds no row
    replay = {f["name"]: f for f in report["benchmarks"]["replay"]["figures"]}
    assert replay["rows stored by the first pass"]["value"] == 500
    assert replay["rows added by the second pass"]["value"] == 0
    # the table went to stdout
    assert "replay rate (first pass)" in proc.stdout and "target" in proc.stdout



def test_a_worker_count_below_one_stops_the_runner_with_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--workers", "2", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("--workers: each count must be at least 1")


def test_the_web_view_benchmark_runs_at_a_small_scale(tmp_path: Path, stack) -> None:
    """bench/web_scale.py: loads, serves, times every endpoint and (with Chromium) every page."""
    import os

    out = tmp_path / "web.json"
    env = {**os.environ, "PREDSTREAM_BENCH_ADMIN_URL": stack.database_url("postgres")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.web_scale", "--rows", "1000", "--repeat", "3", "--json", str(out)]
        + ([] if os.path.exists("/usr/bin/chromium") else ["--no-browser"]),
        cwd=ROOT, capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["table"]["rows"] == report["load"]["rows"] == 1000
    names = {f["name"] for f in report["figures"]}
    assert {"GET /api/v1/runs", "GET /api/v1/disagreements (2 runs, a step)", "page /compare"} <= names
    for fig in report["figures"]:
        assert math.isfinite(fig["p50_ms"]) and fig["p99_ms"] >= fig["p50_ms"]
    if os.path.exists("/usr/bin/chromium"):
        assert {p["name"] for p in report["pages"]} == {"runs", "compare (2 runs)", "prompt", "search"}
