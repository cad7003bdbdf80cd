"""The README's main job: `predstream demo` (its quick mode, as CI runs it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.train, pytest.mark.slow]


def test_demo_compares_the_same_prompts_across_two_runs(kafka_bootstrap, topic, database_url, tmp_path, monkeypatch):
    from rich.console import Console

    from predstream.demo import DemoPlan, run_demo

    monkeypatch.setenv("PREDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("PREDSTREAM_DATABASE_URL", database_url)
    monkeypatch.setenv("PREDSTREAM_TOPIC", topic)
    plan = DemoPlan.quick()
    result = run_demo(plan, tmp_path / "out", Console(file=open(os.devnull, "w")))

    assert len(result.jobs) == 2
    expected = plan.n_samples * plan.evaluations
    assert result.rows == {job: expected for job in result.jobs}
    assert result.plot.read_bytes()[:4] == b"\x89PNG"
    prompts = result.comparison.prompts
    assert prompts, "the comparison shows prompts"
    for p in prompts:
        # the same prompt_id has predictions from both runs: runs are comparable
        assert set(p.predictions) == set(result.jobs)
        assert p.steps == [plan.eval_every * (i + 1) for i in range(plan.evaluations)]
    changed = [p for p in prompts for job in result.jobs if len({pred for pred, _ in p.predictions[job].values()}) > 1]
    assert changed, "predictions change across steps"
    assert result.compare_url.endswith("/compare?" + "&".join(f"job={j}" for j in result.jobs))


def test_demo_command_runs_on_its_own_embedded_stack_and_serves_its_comparison(tmp_path):
    """`predstream demo --serve`: trains, compares, prints the comparison page's URL and serves
    it until Ctrl-C, then tears down what it started."""
    import signal

    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    env["PREDSTREAM_HOME"] = str(tmp_path / "home")
    env["COLUMNS"] = "200"
    proc = subprocess.Popen([sys.executable, "-m", "predstream", "demo", "--quick", "--output-dir",
                             str(tmp_path / "out"), "--serve", "--web-port", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if line.startswith("web view: "):
                break
        assert out and out[-1].startswith("web view: http://127.0.0.1:"), (
            "".join(out)[-3000:] + proc.stderr.read()[-3000:])
        url = out[-1].split()[2]
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "Compare runs" in page.text
        assert "exact-match accuracy" in "".join(out)
        assert (tmp_path / "out" / "comparison.png").exists()
    finally:
        proc.send_signal(signal.SIGINT)  # then it stops its worker, broker and Postgres (slow on a busy machine)
        rest, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    # it tore down what it started: no process and no data left under its home
    import psutil

    home = str(tmp_path / "home")
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if any(home in part for part in p.info["cmdline"] or [])]
    assert leftovers == []
    assert not any((tmp_path / "home").glob("demo-stack-*"))
