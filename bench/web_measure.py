"""The timing half of bench/web_scale.py: every API endpoint and page through the real HTTP
server (httpx), and every page's time to usable in Chromium."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from bench._common import percentile

API_TARGET_MS = 100.0
PAGE_TARGET_MS = 1000.0


def _parameters(url: str, rng: random.Random) -> dict[str, Any]:
    """What to vary: jobs, steps, prompt ids, search words, read from the database."""
    import psycopg

    with psycopg.connect(url) as conn:
        jobs = [r[0] for r in conn.execute("SELECT DISTINCT job_id FROM prediction_step_summary ORDER BY 1")]
        steps = [r[0] for r in conn.execute("SELECT DISTINCT step FROM prediction_step_summary ORDER BY 1")]
        prompts = [r[0] for r in conn.execute("SELECT prompt_id FROM prediction_prompts ORDER BY prompt_id")]
        sources = [r[0] for r in conn.execute(
            "SELECT source_index FROM prediction_prompts WHERE source_index IS NOT NULL")]
        models = [r[0] for r in conn.execute("SELECT DISTINCT model_name FROM prediction_step_summary "
                                             "WHERE model_name IS NOT NULL")]
    return {"jobs": jobs, "steps": steps, "prompts": prompts, "sources": sources, "models": models,
            "words": ["answer", "reverse", "json", "count each", "total", "zzz-nothing"]}


def _calls(p: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """endpoint name -> a function returning (path, params) varied per call."""
    def pair() -> list[str]:
        return rng.sample(p["jobs"], min(2, len(p["jobs"])))

    return {
        "GET /api/v1/runs": lambda: ("/api/v1/runs", {}),
        "GET /api/v1/runs?q=&model=": lambda: (
            "/api/v1/runs", {"q": f"-{rng.randint(0, 9)}", "model": rng.choice(p["models"])}),
        "GET /api/v1/accuracy (2 runs)": lambda: ("/api/v1/accuracy", {"job": pair()}),
        "GET /api/v1/disagreements (2 runs, a step)": lambda: (
            "/api/v1/disagreements", {"job": pair(), "step": rng.choice(p["steps"])}),
        "GET /api/v1/prompts/{id} (5 runs)": lambda: (f"/api/v1/prompts/{rng.choice(p['prompts'])}", {}),
        "GET /api/v1/search?q=text": lambda: ("/api/v1/search", {"q": rng.choice(p["words"])}),
        "GET /api/v1/search?q=source_index": lambda: ("/api/v1/search", {"q": str(rng.choice(p["sources"]))}),
        "GET /api/v1/sets": lambda: ("/api/v1/sets", {}),
        "page /": lambda: ("/", {}),
        "page /compare": lambda: ("/compare", {"job": pair(), "step": rng.choice(p["steps"])}),
        "page /prompts/{id}": lambda: (f"/prompts/{rng.choice(p['prompts'])}", {}),
        "page /search": lambda: ("/search", {"q": rng.choice(p["words"])}),
    }


def _browser_pages(p: dict[str, Any], rng: random.Random) -> dict[str, str]:
    a, b = p["jobs"][0], p["jobs"][-1]
    return {
        "runs": "/",
        "compare (2 runs)": f"/compare?job={quote(a)}&job={quote(b)}",
        "prompt": f"/prompts/{p['prompts'][len(p['prompts']) // 2]}",
        "search": "/search?q=answer",
    }


def measure(url: str, *, repeat: int = 200, browser: bool = True) -> dict[str, Any]:
    import httpx

    rng = random.Random(3)
    params = _parameters(url, rng)
    figures: list[dict[str, Any]] = []
    with _served(url) as base, httpx.Client(base_url=base, timeout=30) as client:
        for name, make in _calls(params, rng).items():
            for _ in range(3):  # warm the pool and the cache
                path, q = make()
                client.get(path, params=q).raise_for_status()
            times = []
            for _ in range(repeat):
                path, q = make()
                t0 = time.perf_counter()
                client.get(path, params=q).raise_for_status()
                times.append((time.perf_counter() - t0) * 1000)
            p99 = percentile(times, 99)
            figures.append({"name": name, "p50_ms": round(percentile(times, 50), 1), "p99_ms": round(p99, 1),
                            "calls": repeat,
                            "target": f"p99 <= {API_TARGET_MS:g} ms" if name.startswith("GET") else None,
                            "passed": p99 <= API_TARGET_MS if name.startswith("GET") else None})
        pages = _time_pages(base, _browser_pages(params, rng)) if browser else []
    return {"figures": figures, "pages": pages}


@contextlib.contextmanager
def _served(url: str) -> Iterator[str]:
    """`predstream serve` in its own process (as a user runs it): its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    proc = subprocess.Popen([sys.executable, "-m", "predstream", "serve", "--port", "0", "--database-url", url],
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("predstream web view: "):
            raise RuntimeError(f"predstream serve did not start: {line!r}")
        yield line.split()[3].rstrip("/")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def _time_pages(base: str, pages: dict[str, str], rounds: int = 5) -> list[dict[str, Any]]:
    """Each page's time to usable: navigation start to the load event (HTML parsed, CSS
    applied, the server-drawn chart in the DOM), median and worst of ``rounds`` loads."""
    if not os.path.exists("/usr/bin/chromium"):
        return [{"name": "browser", "error": "no /usr/bin/chromium: apt-get install chromium"}]
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                     args=["--no-sandbox"] if os.geteuid() == 0 else [])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        for name, path in pages.items():
            times = []
            for _ in range(rounds):
                page.goto(base + path, wait_until="load")
                times.append(page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return n.loadEventEnd - n.startTime; })()"))
            worst = max(times)
            out.append({"name": name, "path": path, "median_ms": round(sorted(times)[len(times) // 2], 1),
                        "max_ms": round(worst, 1), "target": f"<= {PAGE_TARGET_MS:g} ms",
                        "passed": worst <= PAGE_TARGET_MS})
        browser.close()
    return out


def print_report(report: dict[str, Any]) -> None:
    print(f"\nweb view at scale: {report['table'].get('rows', 0):,} rows, table {report['table'].get('table_size')}, "
          f"with indexes {report['table'].get('total_size')}")
    print(f"{'endpoint':46} {'p50 ms':>8} {'p99 ms':>8}  target")
    for f in report.get("figures", []):
        mark = "" if f["passed"] is None else ("ok" if f["passed"] else "MISSED")
        print(f"{f['name']:46} {f['p50_ms']:8.1f} {f['p99_ms']:8.1f}  {f['target'] or ''} {mark}")
    for pg in report.get("pages", []):
        if "error" in pg:
            print(f"browser: {pg['error']}")
            continue
        print(f"page in Chromium: {pg['name']:30} median {pg['median_ms']:7.1f} ms, worst {pg['max_ms']:7.1f} ms  "
              f"{pg['target']} {'ok' if pg['passed'] else 'MISSED'}")
