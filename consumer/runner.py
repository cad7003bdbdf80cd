"""Running workers: one in this thread (``consume``), or N as supervised processes
(``consume --workers N``).

:func:`run_worker` runs one :class:`~predstream.consumer.worker.Worker` in the calling
thread: it serves ``/metrics`` and ``/healthz``, turns SIGTERM/SIGINT into a clean stop
(the batch in flight is stored and committed), and tunes the garbage collector.

:func:`run_worker_processes` runs N of them as processes, as process supervisors do:

* SIGTERM and SIGINT are forwarded to every worker as SIGTERM; each finishes its batch and
  exits 0, then the supervisor returns 0.
* A worker that dies (killed, out of memory, a fatal error) is restarted in its slot (same
  index, same metrics port) after 1, 2, 4 ... s (at most 30 s; the delay grows with that
  slot's consecutive crashes). The others keep running: its partitions go to them for the
  few seconds it is gone, and come back at the next rebalance. Each death and restart is
  logged.
* Crash loop: when workers died more than ``max_restarts`` times within
  ``restart_window_s`` (default 5 within 300 s), the supervisor gives up: it stops the
  others and returns 1. ``max_restarts=0`` restores "one dies, all stop".
* A worker that exits 0 by itself (someone sent it SIGTERM directly) is not restarted.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .errors import RetriableError, WorkerError
from .metrics import ConsumerMetrics, check_port_free, serve_metrics
from .settings import ConsumerSettings
from .worker import Worker

__all__ = ["run_worker", "run_worker_processes", "restart_delay"]

_log = logging.getLogger(__name__)

_MAX_DELAY_S = 30.0
_GC_THRESHOLDS = (20_000, 50, 100)
#: What signal.signal() returns: the handler it replaced.
_Handler = Callable[[int, FrameType | None], Any] | int | None


def run_worker(
    settings: ConsumerSettings,
    stop_event: threading.Event | None = None,
    *,
    name: str | None = None,
    metrics: ConsumerMetrics | None = None,
    handle_signals: bool | None = None,
    index: int = 0,
) -> None:
    """Run one worker in this thread until ``stop_event`` is set (or SIGTERM/SIGINT).

    Serves ``/metrics`` and ``/healthz`` on ``settings.metrics_port`` when it is not 0.
    Signal handlers are installed only in the main thread (``handle_signals=None``).
    Returns after a clean shutdown; raises :class:`WorkerError` when it cannot go on.
    """
    if settings.metrics_port:
        check_port_free(settings.metrics_port)  # before the worker joins its group
    stop_event = stop_event or threading.Event()
    worker = Worker(settings, stop_event=stop_event, name=name, metrics=metrics, index=index)
    if handle_signals is None:
        handle_signals = threading.current_thread() is threading.main_thread()
    previous: dict[signal.Signals, _Handler] = {}
    if handle_signals:
        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            _log.info("%s received: finishing the batch in flight", signal.Signals(signum).name)
            stop_event.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)
    server = serve_metrics(worker.metrics, worker.health, settings.metrics_port) if settings.metrics_port else None
    thresholds = gc.get_threshold()
    # Each batch makes and drops tens of thousands of objects; with the default thresholds
    # the cyclic GC rescans every long-lived object many times a second (10-15 % of a
    # worker's CPU, measured in bench/). Start-up objects are frozen out of its scans and
    # the young generation collects less often; the events themselves hold no cycles.
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    try:
        worker.run()
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        if server is not None:
            server.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def restart_delay(consecutive_crashes: int) -> float:
    """Seconds before restarting a worker after its n-th consecutive crash: 1, 2, 4 ... 30."""
    return min(_MAX_DELAY_S, 2.0 ** max(0, consecutive_crashes - 1))


def _process_main(settings_data: dict[str, Any], index: int, init: Callable[[], None] | None) -> None:
    # a Ctrl-C reaches every process of the terminal's group: the supervisor forwards it as
    # SIGTERM, so a worker still starting must not die of it with a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if init is not None:
        init()
    settings = ConsumerSettings(**settings_data)
    try:
        run_worker(settings, name=f"{index}:{os.getpid()}", index=index)
    except (WorkerError, RetriableError) as exc:
        _log.error("worker %d: %s", index, exc)
        raise SystemExit(2) from None


@dataclass
class _Slot:
    index: int
    data: dict[str, Any]
    proc: Any = None
    started: float = 0.0
    #: consecutive crashes (reset when the worker had run for a whole window)
    crashes: int = 0
    restart_at: float | None = None
    done: bool = False


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def run_worker_processes(
    settings: ConsumerSettings,
    workers: int,
    *,
    init: Callable[[], None] | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Run ``workers`` worker processes (spawned) until SIGTERM/SIGINT or ``stop_event``.

    Worker ``i`` serves metrics on ``settings.metrics_port + i`` (when not 0). ``init``
    (picklable, e.g. a logging set-up) runs first in each process. Returns 0 after a clean
    stop, 1 when the workers crash-looped (see the module docstring) or one did not stop
    cleanly.
    """
    ctx = multiprocessing.get_context("spawn")
    slots = []
    for i in range(workers):
        data = settings.model_dump()
        if settings.metrics_port:
            data["metrics_port"] = settings.metrics_port + i
            check_port_free(data["metrics_port"])  # a taken port is said at once, not crash-looped
        slots.append(_Slot(i, data))
    crashes: deque[float] = deque()  # times of deaths within the window, all slots
    stopping = threading.Event()

    def _start(slot: _Slot) -> None:
        slot.proc = ctx.Process(target=_process_main, args=(slot.data, slot.index, init),
                                name=f"predstream-worker-{slot.index}")
        slot.proc.start()
        slot.started = time.monotonic()
        slot.restart_at = None

    def _forward(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous: dict[signal.Signals, _Handler] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _forward)
    gave_up = False
    signalled = False
    try:
        for slot in slots:
            _start(slot)
        _log.info("started %d worker process(es): %s", workers, ", ".join(str(s.proc.pid) for s in slots))
        while not all(s.done for s in slots):
            if stop_event is not None and stop_event.is_set():
                stopping.set()
            if stopping.is_set() and not signalled:
                signalled = True
                _log.info("stopping %d worker process(es)", sum(1 for s in slots if s.proc.is_alive()))
                for s in slots:
                    if s.proc.is_alive() and s.proc.pid:
                        os.kill(s.proc.pid, signal.SIGTERM)
            now = time.monotonic()
            for slot in slots:
                if slot.done or slot.proc.is_alive():
                    continue
                if slot.restart_at is None:
                    gave_up = _on_exit(slot, now, crashes, settings, stopping) or gave_up
                elif stopping.is_set():
                    slot.done = True
                elif now >= slot.restart_at:
                    _start(slot)
                    _log.warning("worker %d restarted (pid %s)", slot.index, slot.proc.pid)
            time.sleep(0.1)
        for s in slots:
            s.proc.join()
        return 1 if gave_up or any(s.proc.exitcode != 0 for s in slots) else 0
    finally:
        for s in slots:
            if s.proc is not None and s.proc.is_alive():
                s.proc.kill()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _on_exit(slot: _Slot, now: float, crashes: deque[float], settings: ConsumerSettings,
             stopping: threading.Event) -> bool:
    """Handle a worker that just exited; return True when the supervisor gives up."""
    code = slot.proc.exitcode
    if stopping.is_set() or code == 0:
        if code == 0 and not stopping.is_set():
            _log.info("worker %d (pid %s) stopped by itself; not restarted", slot.index, slot.proc.pid)
        elif code != 0:
            _log.error("worker %d (pid %s) %s while stopping", slot.index, slot.proc.pid, _exit_text(code))
        slot.done = True
        return False
    window = settings.restart_window_s
    crashes.append(now)
    while crashes and now - crashes[0] > window:
        crashes.popleft()
    slot.crashes = 1 if now - slot.started > window else slot.crashes + 1
    if len(crashes) > settings.max_restarts:
        _log.error("worker %d (pid %s) %s: %d worker crash(es) within %.0f s (limit %d); giving up and stopping "
                   "the others", slot.index, slot.proc.pid, _exit_text(code), len(crashes), window,
                   settings.max_restarts)
        slot.done = True
        stopping.set()
        return True
    delay = restart_delay(slot.crashes)
    _log.warning("worker %d (pid %s) %s; restarting it in %.0f s (crash %d of %d allowed within %.0f s)",
                 slot.index, slot.proc.pid, _exit_text(code), delay, len(crashes), settings.max_restarts, window)
    slot.restart_at = now + delay
    return False
