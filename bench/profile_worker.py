"""Profile one consumer worker: ``python -m bench.profile_worker [--events N] [--out DIR]``.

Starts the embedded stack, loads ``N`` benchmark events (those of benchmark 2) into a topic,
then runs one worker process (``run_worker``, default settings) until every event is
stored. Prints the worker's CPU per event from its first stored row to its last (the whole
process: librdkafka's threads included), and the worker thread's own CPU in its main steps.
With py-spy (``pip install py-spy``) it also attaches the sampling profiler once the first
row is stored (start-up left out; ``--nonblocking``, so the worker is not paused) and
prints the top frames, by their own time and with their callees, in µs of samples per
event. py-spy samples wall-clock time of running threads: on a busy machine a thread waiting
for a core counts too, so read these as shares. Writes py-spy's raw (collapsed) stacks and a
speedscope file to ``DIR`` (default ``bench/results/profile``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ._common import SIZES, BenchContext

_RATE = 250  # samples per second

_CHILD = r"""
import json, os, sys, threading, time
from pathlib import Path
import psycopg
from predstream.consumer.settings import ConsumerSettings
from predstream.consumer.runner import run_worker

settings = ConsumerSettings(**json.loads(sys.argv[1]))
n, marker = int(sys.argv[2]), Path(sys.argv[3])
stop = threading.Event()
out = {}

def inserted(conn):
    value, called = conn.execute("SELECT last_value, is_called FROM training_predictions_id_seq").fetchone()
    return value if called else 0

def watch():
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        while inserted(conn) == 0:
            time.sleep(0.01)
        t, out["first_rows"], out["t0"] = os.times(), inserted(conn), time.perf_counter()
        out["cpu0"] = t.user + t.system
        marker.write_text("first row")
        while inserted(conn) < n:  # the sequence: cheap, unlike count(*) while the table grows
            time.sleep(0.1)
        while conn.execute("SELECT count(*) FROM training_predictions").fetchone()[0] < n:
            time.sleep(0.05)
        t = os.times()
        out["cpu1"], out["t1"] = t.user + t.system, time.perf_counter()
    stop.set()

# CPU time of the worker thread in its main steps (thread_time: this thread only)
spent = {}
def timed(cls, name):
    inner = getattr(cls, name)
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.thread_time() - t0
    setattr(cls, name, wrapper)
from predstream.consumer import sink as s, transcode as tc, worker as w
for cls, name in ((tc.Transcoder, "transcode_many"), (s.PostgresSink, "write"), (w.Worker, "_poll"),
                  (w.Worker, "_flush"), (w.Worker, "_commit")):
    if hasattr(cls, name):
        timed(cls, name)
threading.Thread(target=watch, daemon=True).start()
t_main0 = time.thread_time()
run_worker(settings, stop, handle_signals=False)
main = time.thread_time() - t_main0
counted = n - out["first_rows"]
print(json.dumps({"cpu_us_per_event": (out["cpu1"] - out["cpu0"]) / counted * 1e6,
                  "rate": counted / (out["t1"] - out["t0"]), "events": counted,
                  "thread_cpu_us_per_event": {k: v / n * 1e6 for k, v in spent.items()},
                  "main_thread_cpu_us_per_event": main / n * 1e6}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true", help="only the CPU per event, without py-spy")
    args = parser.parse_args(argv)

    from predstream.local import LocalStack

    spy = None if args.no_profile else shutil.which("py-spy") or _beside_python("py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "worker.raw.txt"
    workdir = Path(tempfile.mkdtemp(prefix="predstream-profile-"))
    stack = LocalStack(workdir / "stack", durable=False)
    stack.start()
    try:
        ctx = BenchContext(stack, dataclasses.replace(SIZES["full"], sink_events=args.events), workdir)
        topic, events = ctx.loaded_topic()
        url = ctx.new_database("profile")
        settings = ctx.consumer_settings(topic, url).model_dump(mode="json")
        marker = workdir / "first-row"
        child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(settings), str(len(events)), str(marker)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        recorder = None
        while child.poll() is None and not marker.exists():
            time.sleep(0.01)
        if spy and child.poll() is None:
            recorder = subprocess.Popen([spy, "record", "--pid", str(child.pid), "--rate", str(_RATE), "--nonblocking",
                                         "--nolineno", "--format", "raw", "--output", str(raw)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stdout, stderr = child.communicate(timeout=1800)
        if recorder is not None:
            recorder.wait(60)
        if child.returncode != 0:
            print(stdout[-3000:], stderr[-3000:], file=sys.stderr)
            return 2
        result = json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"one worker: {result['cpu_us_per_event']:.1f} µs CPU per event, {result['rate']:,.0f} events/s "
          f"({result['events']:,} events)")
    print("the worker thread's own CPU per event:", f"{result['main_thread_cpu_us_per_event']:.1f} µs; in",
          ", ".join(f"{k} {v:.1f}" for k, v in result["thread_cpu_us_per_event"].items()))
    if recorder is not None and raw.exists():
        _summary(raw, result["events"], args.top)
        speedscope = args.out / "worker.speedscope.json"
        _to_speedscope(raw, speedscope)
        print(f"profiles: {raw}, {speedscope}")
    return 0


def _beside_python(name: str) -> str | None:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else None


def _stacks(raw: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def _summary(raw: Path, events: int, top: int) -> None:
    """Top frames by own and by total samples, in µs per event."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for frames, count in _stacks(raw):
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    us = 1e6 / _RATE / events
    print(f"\n{'own µs/ev':>10}  frame")
    for frame, count in own.most_common(top):
        print(f"{count * us:10.2f}  {frame}")
    print(f"\n{'total µs/ev':>11}  frame (with callees)")
    for frame, count in total.most_common(top):
        print(f"{count * us:11.2f}  {frame}")


def _to_speedscope(raw: Path, path: Path) -> None:
    """The collapsed stacks as a speedscope "sampled" profile."""
    frames: dict[str, int] = {}
    samples, weights = [], []
    for stack, count in _stacks(raw):
        samples.append([frames.setdefault(f, len(frames)) for f in stack])
        weights.append(count)
    doc = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": f} for f in frames]},
        "profiles": [{"type": "sampled", "name": "consumer worker", "unit": "none", "startValue": 0,
                      "endValue": sum(weights), "samples": samples, "weights": weights}],
    }
    path.write_text(json.dumps(doc))


if __name__ == "__main__":
    sys.exit(main())
