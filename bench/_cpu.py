"""CPU time of the processes a benchmark watches, and pinning them to cores.

* :func:`children_cpu` / :func:`server_cpu`: user + system CPU seconds of this process's
  children (the consumer workers) and of a server with its children (PostgreSQL runs a
  process per connection), read with ``psutil``.
* :func:`backend_cpu`: the CPU of PostgreSQL *backends* only (the processes serving the
  connections named ``application_name``), read from ``/proc/<pid>/stat``: the database's
  work per row, without the checkpointer, WAL writer and autovacuum that
  :func:`server_cpu` adds.
* :class:`Pinning`: PostgreSQL on one core, everything else (the broker, the benchmark
  process and whatever it starts) on the others, as on a host where the database has a
  core to itself (``taskset`` for every thread of every process).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["children_cpu", "server_cpu", "backend_cpu", "backend_pids", "cpu_between", "Pinning", "self_cpu"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def self_cpu() -> float:
    """CPU seconds of this process, every thread (librdkafka's included)."""
    t = os.times()
    return t.user + t.system


def children_cpu(exclude: set[int | None] | frozenset[int | None] = frozenset()) -> float | None:
    """CPU seconds (user + system) of this process's live child processes (the workers), but
    those in ``exclude`` and their children: the embedded broker is this process's child
    too, and its CPU is not the workers'."""
    try:
        import psutil
    except ImportError:
        return None
    skip: set[int] = set()
    for pid in exclude:
        if pid is None:
            continue
        skip.add(pid)
        try:
            skip.update(p.pid for p in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            pass
    return _cpu_of([p for p in psutil.Process().children(recursive=True) if p.pid not in skip])


def server_cpu(pid: int | None, children: bool = True) -> float | None:
    """CPU seconds used so far by a server process and (``children``) its child processes:
    the live ones, and the exited ones it has reaped."""
    try:
        import psutil
    except ImportError:
        return None
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        total = _cpu_of([proc])
        if children:
            reaped = proc.cpu_times()
            total += reaped.children_user + reaped.children_system + _cpu_of(proc.children(recursive=True))
        return total
    except psutil.Error:
        return None


def _cpu_of(procs: list[Any]) -> float:
    import psutil

    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def backend_pids(conn: Any, application_prefix: str) -> list[int]:
    """Pids of the backends whose ``application_name`` starts with ``application_prefix``."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s", (application_prefix + "%",)
    ).fetchall()
    return [r[0] for r in rows]


def backend_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far of each backend (``/proc/<pid>/stat`` utime + stime); gone ones left out."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two :func:`backend_cpu` readings (a backend new since ``before`` counts whole)."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


class Pinning:
    """PostgreSQL's processes on ``db_core``; the broker and this process's calling thread
    (and the processes it starts afterwards) on the other cores. :meth:`undo` lets
    everything run anywhere again. ``available`` is False on a one-core machine."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.all = sorted(os.sched_getaffinity(0))
        self.available = len(self.all) >= 2
        self.db_core = {self.all[0]}
        self.client_cores = set(self.all[1:])

    def describe(self) -> str:
        return (f"PostgreSQL on core {sorted(self.db_core)}, broker + workers + benchmark on "
                f"core(s) {sorted(self.client_cores)}")

    def apply(self) -> None:
        """Pin the servers, and the calling thread (threads and processes it starts inherit it)."""
        _pin_tree(self.stack.postgres_pid(), self.db_core)
        _pin_tree(self.stack.broker_pid, self.client_cores)
        os.sched_setaffinity(0, self.client_cores)

    def pin_thread(self) -> None:
        """Pin the calling thread to the client cores (call at the start of a thread)."""
        os.sched_setaffinity(0, self.client_cores)

    def undo(self) -> None:
        every = set(self.all)
        _pin_tree(self.stack.postgres_pid(), every)
        _pin_tree(self.stack.broker_pid, every)
        os.sched_setaffinity(0, every)


def _pin_tree(pid: int | None, cores: set[int]) -> None:
    """Every thread of ``pid`` and of its child processes on ``cores``."""
    if pid is None:
        return
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return
    for proc in procs:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cores)
            except OSError:  # the thread ended meanwhile
                pass
