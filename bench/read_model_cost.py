"""What the read model's triggers (migrations/0011) cost the consumer's writes:
``python -m bench.read_model_cost``.

Migrates a fresh database (``predstream_read_model_cost``) on a PostgreSQL given by
``--admin-url`` (a role that may create databases; default the local server at
127.0.0.1:5432), then writes ``--rows`` events of one run (an eval set of 500 prompts per
step) through the consumer's sink in batches of 2,000 (the COPY fast path), with the
table's triggers disabled and then enabled, ``--rounds`` times alternately, a new run each
time. Then it writes the last 2,000 rows again as newer versions (the upsert path, which
replaces rows: UPDATE triggers). Printed per write: wall seconds and the Postgres backend's
CPU time per row (user + system of the database's server processes, from /proc: run it on
the database's machine). ``--migrations`` measures another migrations folder (e.g. an
older 0011).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import timedelta
from pathlib import Path

import psycopg

from bench._common import make_events
from predstream.consumer import ConsumerSettings, IngestRecord, PostgresSink, apply_migrations

DB_NAME = "predstream_read_model_cost"
BATCH = 2000


def _backend_cpu_s() -> float:
    """CPU seconds used so far by the server processes of DB_NAME (their command line names it)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if DB_NAME.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def _write(url: str, records: list[IngestRecord]) -> tuple[float, float]:
    """(wall s, backend CPU µs per row) of writing ``records`` in batches of BATCH."""
    with PostgresSink(url) as sink:
        sink.write(records[:10])  # connect and warm up outside the measurement
        cpu0, t0 = _backend_cpu_s(), time.perf_counter()
        for i in range(10, len(records), BATCH):
            sink.write(records[i:i + BATCH])
        wall = time.perf_counter() - t0
        return wall, (_backend_cpu_s() - cpu0) / max(len(records) - 10, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="events per write (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--migrations", type=Path, default=None, help="migrations folder (default the package's)")
    args = parser.parse_args()

    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    url = psycopg.conninfo.make_conninfo(args.admin_url, dbname=DB_NAME)
    apply_migrations(ConsumerSettings(database_url=url, migrations_dir=args.migrations))

    figures: dict[tuple[str, bool], list[float]] = {}
    print(f"{args.rows:,} rows per write, batches of {BATCH:,}; backend CPU per row", flush=True)
    for r in range(args.rounds):
        for on in (False, True):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"ALTER TABLE training_predictions {'ENABLE' if on else 'DISABLE'} TRIGGER USER")
            events = make_events(args.rows, job_id=f"run-{r}-{on}", seed=r)
            wall, cpu = _write(url, [IngestRecord(e) for e in events])
            figures.setdefault(("insert", on), []).append(cpu)
            newer = [IngestRecord(e.model_copy(update={"produced_at": e.produced_at + timedelta(minutes=1)}))
                     for e in events[-BATCH - 10:]]
            r_wall, r_cpu = _write(url, newer)
            figures.setdefault(("replace", on), []).append(r_cpu)
            print(f"round {r + 1} triggers {'on ' if on else 'off'}: insert {wall:6.2f} s {cpu:6.1f} µs/row;"
                  f" replace {BATCH:,} rows {r_wall:5.2f} s {r_cpu:6.1f} µs/row", flush=True)
    for path in ("insert", "replace"):
        off, on_ = statistics.median(figures[(path, False)]), statistics.median(figures[(path, True)])
        print(f"{path}: median {off:.1f} µs/row without triggers, {on_:.1f} with (+{on_ - off:.1f} µs,"
              f" x{on_ / off:.2f})")


if __name__ == "__main__":
    main()
