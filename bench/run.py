"""The benchmark runner: ``python -m bench.run [--size small|full] [--only NAME ...] [--json PATH]``.

Starts its own embedded stack (broker + PostgreSQL, ``fsync=off``) in a temporary folder,
runs the benchmarks one after the other on that same stack, prints one table (figure,
value, target, pass/fail) and writes every figure, the details and the machine's facts as
JSON (default ``bench/results/latest.json``). Exit status: 0 when every benchmark ran
(targets missed or not; ``--strict`` makes a missed target exit 1), 2 when one failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from ._common import SIZES, BenchContext, BenchResult, machine_facts

__all__ = ["BENCHMARKS", "main", "run_benchmarks"]

#: Benchmark modules in run order (``bench.<name>``), each with ``run(ctx) -> BenchResult``.
BENCHMARKS = ("training_cost", "sink_throughput", "latency", "replay", "generation", "identity")
#: Those that need no broker and no database.
_NO_STACK = {"generation", "identity"}
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def run_benchmarks(names: list[str], size_name: str, *, durable: bool = False, events: int | None = None,
                   workers: tuple[int, ...] | None = None, progress: Any = None) -> dict[str, Any]:
    """Run ``names`` at ``size_name``; return the JSON-ready report."""
    from predstream.local import LocalStack

    size = SIZES[size_name]
    if events:
        size = dataclasses.replace(size, sink_events=events)
    if workers:
        size = dataclasses.replace(size, worker_counts=tuple(workers))
    report: dict[str, Any] = {"size": size_name, "sink_events": size.sink_events, "machine": machine_facts(),
                              "durable_postgres": durable,
                              "benchmarks": {}}
    workdir = Path(tempfile.mkdtemp(prefix="predstream-bench-"))
    stack = None
    started = time.monotonic()
    try:
        if any(n not in _NO_STACK for n in names):
            stack = LocalStack(workdir / "stack", durable=durable)
            stack.start()
            report["machine"]["postgres"] = _server_version(stack)
        ctx = BenchContext(stack, size, workdir)
        for name in names:
            if progress:
                progress(f"running {name} ({size_name}) ...")
            t0 = time.monotonic()
            try:
                module = importlib.import_module(f"bench.{name}")
                result: BenchResult = module.run(ctx)
            except Exception as exc:  # one broken benchmark must not hide the others' figures
                result = BenchResult(name, name, error=f"{type(exc).__name__}: {exc}")
                result.details["traceback"] = traceback.format_exc()
            result.seconds = round(time.monotonic() - t0, 2)
            report["benchmarks"][name] = result.to_json()
            if progress:
                progress(f"  {name}: {result.seconds:.1f} s" + (f" - FAILED: {result.error}" if result.error else ""))
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report["seconds"] = round(time.monotonic() - started, 2)
    return report


def _server_version(stack: Any) -> str:
    import psycopg

    with psycopg.connect(stack.database_url("postgres"), autocommit=True) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    m = report["machine"]
    table = Table(title=f"predstream benchmarks ({report['size']}) - {m.get('cpu_model', '?')}, "
                        f"{m.get('cpu_count')} cores, {m.get('date')}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("target")
    table.add_column("", justify="center")
    for bench in report["benchmarks"].values():
        table.add_section()
        table.add_row(f"[bold]{bench['title']}[/bold]", "", "", "", f"{bench['seconds']:.0f} s")
        if bench["error"]:
            table.add_row(f"[red]failed: {bench['error']}[/red]", "", "", "", "[red]ERROR[/red]")
        for fig in bench["figures"]:
            mark = {True: "[green]pass[/green]", False: "[red]MISS[/red]", None: ""}[fig["passed"]]
            table.add_row("  " + fig["name"], _fmt(fig["value"]), fig["unit"], fig["target"] or "", mark)
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small",
                        help="smoke: seconds (the test suite's run); small: about a minute; "
                             "full: the figures of docs/performance.md")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the figures (default {DEFAULT_JSON})")
    parser.add_argument("--durable", action="store_true", help="run PostgreSQL with fsync on (default off)")
    parser.add_argument("--events", type=int, default=None,
                        help="override the size's event count of the sink and replay benchmarks")
    parser.add_argument("--workers", nargs="+", type=int, default=None, metavar="N",
                        help="consumer worker counts of the sink benchmark (default 1 2); "
                             "give more on a machine with more cores")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.workers and min(args.workers) < 1:
        parser.error("--workers: each count must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    report = run_benchmarks(names, args.size, durable=args.durable, events=args.events, workers=args.workers,
                            progress=lambda line: print(line, file=sys.stderr, flush=True))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print_table(report)
    print(f"figures written to {args.json} ({report['seconds']:.0f} s in all)")
    benches = report["benchmarks"].values()
    if any(b["error"] for b in benches):
        return 2
    if args.strict and any(f["passed"] is False for b in benches for f in b["figures"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
