"""The web view at scale: fill a table with millions of predictions, then time every page's
queries through the real HTTP server (httpx) and every page's time to usable in Chromium.

    python -m bench.web_scale                      # 200 runs x 500 prompts x 100 steps = 10 M rows
    python -m bench.web_scale --reuse              # measure again on the database loaded before
    python -m bench.web_scale --scale smoke        # 4 x 50 x 10 = 2,000 rows (the test suite's run)

Rows go in by binary COPY into a fresh database (``predstream_web_scale``), migrated first,
so the read model's triggers (migrations/0011) summarise them as the consumer's writes would.
The server is a PostgreSQL given by ``--admin-url`` (a role that may create databases), else
an embedded PostgreSQL 18 kept in ``--home`` between runs (fsync off). Timed: each API
endpoint ``--repeat`` times with varied parameters (p50, p99), each page's HTML, and each
page's time to usable in Chromium (navigation start to the ``load`` event, the chart drawn).
Targets: p99 <= 100 ms per API call; each page usable in <= 1 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import machine_facts

DB_NAME = "predstream_web_scale"
API_TARGET_MS = 100.0
PAGE_TARGET_MS = 1000.0


@dataclass(frozen=True)
class Scale:
    runs: int
    prompts: int
    steps: int

    @property
    def rows(self) -> int:
        return self.runs * self.prompts * self.steps


SCALES = {"full": Scale(200, 500, 100), "small": Scale(20, 200, 50), "smoke": Scale(4, 50, 10)}

_WORDS = ("the model answer question number list value step training data result sum total first last "
          "between which following given explain write short reason because therefore compute return "
          "string order reverse letters count each word sentence example input output format json").split()
_MODELS = ("gpt2-tiny", "llama-3.2-1b", "qwen2.5-0.5b", "mistral-7b")


def _text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    words: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(_WORDS)
        words.append(w)
        size += len(w) + 1
    return " ".join(words)[:n]


def _prompts(n: int) -> list[tuple[str, int, str | None, str | None, str]]:
    """(prompt_id, source_index, prompt, messages json, ground_truth): ~300-character prompts,
    one in five a chat."""
    rng = random.Random(7)
    out = []
    for i in range(n):
        body = _text(rng, 150, 450)
        answer = _text(rng, 10, 60)
        if i % 5 == 4:
            messages = json.dumps([{"role": "system", "content": "You answer briefly."},
                                   {"role": "user", "content": body}])
            prompt = None
            pid = hashlib.sha256(messages.encode()).hexdigest()
        else:
            messages, prompt = None, body
            pid = hashlib.sha256(body.encode()).hexdigest()
        out.append((pid, i, prompt, messages, answer))
    return out


def _connect(url: str, **kw: Any) -> Any:
    import psycopg

    return psycopg.connect(url, **kw)


def database_urls(args: argparse.Namespace) -> tuple[str, str]:
    """(admin URL, the bench database's URL); starts the embedded server when none is given."""
    if args.admin_url:
        admin = args.admin_url
    else:
        from predstream.local import LocalStack

        home = Path(args.home).expanduser()
        port_file = home / "pg_port"
        port = int(port_file.read_text()) if port_file.exists() else 0
        stack = LocalStack(home, pg_port=port, durable=False)
        if not (stack.pgdata / "postmaster.pid").exists():
            stack.start_postgres()
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.write_text(str(stack.pg_port))
        admin = stack.database_url("postgres")
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    target = make_conninfo(admin, dbname=DB_NAME)
    del conninfo_to_dict
    return admin, target


def stored_rows(url: str) -> int | None:
    import psycopg

    try:
        with _connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT sum(rows_total) FROM prediction_step_summary").fetchone()
            return int(row[0] or 0) if row else 0
    except psycopg.Error:
        return None


def load(admin: str, url: str, scale: Scale, log: Any = print) -> dict[str, Any]:
    """A fresh database with ``scale.rows`` predictions; returns load figures."""
    from predstream.consumer import ConsumerSettings, apply_migrations

    with _connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    apply_migrations(ConsumerSettings(database_url=url))
    prompts = _prompts(scale.prompts)
    models = [_MODELS[r % len(_MODELS)] for r in range(scale.runs)]
    columns = ("job_id", "epoch", "step", "sample_index", "prompt", "ground_truth", "prediction", "prompt_id",
               "source_index", "sample_source", "sample_source_id", "event_id", "epoch_exact", "sequence_index",
               "messages", "model_name", "produced_at", "ingested_at", "attempt")
    types = ("text", "int4", "int4", "int4", "text", "text", "text", "text", "int4", "text", "text", "text",
             "float8", "int4", "jsonb", "text", "timestamptz", "timestamptz", "int4")
    t0 = time.monotonic()
    base = datetime(2026, 6, 1, tzinfo=UTC)
    rng = random.Random(11)
    wrong = [_text(rng, 20, 200) for _ in range(64)]
    with _connect(url) as conn:
        for r in range(scale.runs):
            job = f"run-{r:04d}-lr{(r % 7 + 1) * 1e-4:g}"
            skill = 0.3 + 0.6 * (r % 10) / 10  # how far accuracy climbs by the last step
            start = base + timedelta(hours=r)
            with conn.cursor() as cur, cur.copy(
                f"COPY training_predictions ({', '.join(columns)}) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(types)
                for s in range(1, scale.steps + 1):
                    step = s * 10
                    p_right = skill * s / scale.steps
                    at = start + timedelta(seconds=30 * s)
                    for i, (pid, src, prompt, messages, answer) in enumerate(prompts):
                        # deterministic per (run, prompt, step): answers settle as training goes on
                        h = hashlib.blake2b(f"{r}/{i}/{s // 3}".encode(), digest_size=4).digest()
                        right = int.from_bytes(h, "big") / 2**32 < p_right
                        prediction = answer if right else wrong[(i + s // 3 + r) % len(wrong)]
                        copy.write_row((
                            job, step // 100, step, i, prompt, answer, prediction, pid, src, "dataset",
                            "/data/eval.jsonl", f"{job}/{step}/{i}", step / 100, 0, messages, models[r], at, at, 0,
                        ))
            conn.commit()
            if log and (r + 1) % max(1, scale.runs // 20) == 0:
                done = (r + 1) * scale.prompts * scale.steps
                log(f"  loaded {done:,} rows ({done / (time.monotonic() - t0):,.0f} rows/s)")
    seconds = time.monotonic() - t0
    with _connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) training_predictions")
        conn.execute("VACUUM (ANALYZE) prediction_step_summary")
        conn.execute("VACUUM (ANALYZE) prediction_prompts")
    return {"rows": scale.rows, "load_seconds": round(seconds, 1), "rows_per_second": round(scale.rows / seconds)}


def table_facts(url: str) -> dict[str, Any]:
    with _connect(url) as conn:
        row = conn.execute(
            """SELECT pg_size_pretty(pg_relation_size('training_predictions')),
                      pg_size_pretty(pg_total_relation_size('training_predictions')),
                      pg_size_pretty(pg_indexes_size('training_predictions')),
                      (SELECT sum(rows_total) FROM prediction_step_summary), version()""").fetchone()
        assert row is not None
    return {"table_size": row[0], "total_size": row[1], "indexes_size": row[2], "rows": int(row[3] or 0),
            "server": row[4].split(",")[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--rows", type=int, default=None,
                        help="roughly this many rows instead (runs x 50 prompts x 10 steps)")
    parser.add_argument("--admin-url", default=os.environ.get("PREDSTREAM_BENCH_ADMIN_URL"),
                        help="a PostgreSQL role that may create databases (default: an embedded server in --home)")
    parser.add_argument("--home", default="~/.predstream/bench-web", help="the embedded server's folder (kept)")
    parser.add_argument("--reuse", action="store_true",
                        help="measure on the database a previous run loaded (when it holds the rows asked for)")
    parser.add_argument("--repeat", type=int, default=200, help="calls per API endpoint")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium page timings")
    parser.add_argument("--load-only", action="store_true", help="load (or find) the data, measure nothing")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    if args.rows:
        runs = max(1, args.rows // 500)
        scale = Scale(runs, 50, 10)
    admin, url = database_urls(args)
    report: dict[str, Any] = {"machine": machine_facts(), "scale": scale.__dict__}
    found = stored_rows(url) if args.reuse else None
    if found == scale.rows:
        print(f"reusing {DB_NAME}: {found:,} rows")
        report["load"] = {"rows": found, "reused": True}
    else:
        print(f"loading {scale.rows:,} rows ({scale.runs} runs x {scale.prompts} prompts x {scale.steps} steps)")
        report["load"] = load(admin, url, scale)
    report["table"] = table_facts(url)
    print(json.dumps(report["table"]))
    if not args.load_only:
        from bench.web_measure import measure

        report.update(measure(url, repeat=args.repeat, browser=not args.no_browser))
        from bench.web_measure import print_report

        print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    failed = [f for f in report.get("figures", []) if f.get("passed") is False]
    return 1 if failed and os.environ.get("PREDSTREAM_BENCH_STRICT") else 0


if __name__ == "__main__":
    sys.exit(main())
