"""Running the app: in the foreground (:func:`serve`, ``predstream serve``) or in a
background thread (:func:`start_server`: tests, benchmarks, ``predstream demo --serve``).

The listening socket is bound here, before uvicorn starts, so a port in use is one clear
error and port 0 takes any free port (its number is in the printed URL).
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import uvicorn

from .app import create_app
from .errors import WebError
from .settings import ServeSettings

__all__ = ["serve", "start_server", "RunningServer", "check_database"]

_log = logging.getLogger(__name__)


def check_database(settings: ServeSettings) -> None:
    """Before serving: the database answers and holds predstream's tables, readable by this role."""
    from predstream.schemas import redact_url

    url = settings.require_database_url()
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1 FROM prediction_accuracy_by_step LIMIT 0")
            conn.execute("SELECT 1 FROM prediction_sets LIMIT 0")
    except psycopg.Error as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = {
            "42P01": ": this database has no predstream tables; "
                     "run `predstream migrate` or give the right --database-url",
            "42501": ": the role lacks SELECT; apply docs/reader_role.sql (docs/web.md)",
        }.get(getattr(exc, "sqlstate", None) or "", "")
        raise WebError(redact_url(f"database {redact_url(url)}: {text}{hint}", url)) from None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise WebError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): pass another --port "
            "(or PREDSTREAM_WEB_PORT; 0 takes any free port)"
        ) from None
    # responses go out as written: without it, Nagle and delayed ACKs add ~40 ms to each request
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}"


def _server(settings: ServeSettings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def serve(settings: ServeSettings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until Ctrl-C / SIGTERM. ``on_ready(url)`` is called once the socket listens."""
    check_database(settings)
    sock = _bind(settings.web_host, settings.web_port)
    url = _url(sock, settings.web_host)
    server = _server(settings)
    _freeze_heap()
    if on_ready is not None:
        on_ready(url)
    _log.info("serving %s (database read-only)", url)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again: make
    # that an ordinary return (exit 0), as for the other long-running commands
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


def _freeze_heap() -> None:
    """Leave what start-up built (modules, the app's routes, pydantic's validators: ~90,000
    objects) out of every later garbage collection. Without this, each full collection walked
    them all, about 70 ms here, and landed in one request in ~25: that was the p99 of
    ``GET /api/v1/runs`` at 10 M rows (95 ms against 25 ms at p50; docs/performance.md)."""
    gc.collect()
    gc.freeze()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@dataclass
class RunningServer:
    """A server running in a background thread; :meth:`stop` ends it."""

    url: str
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _sock: socket.socket = field(repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(settings: ServeSettings, *, timeout: float = 15.0, check: bool = True) -> RunningServer:
    """Start serving in a daemon thread; return once it answers requests."""
    if check:
        check_database(settings)
    sock = _bind(settings.web_host, settings.web_port)
    server = _server(settings)  # not in the main thread: uvicorn installs no signal handlers
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="predstream-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise WebError(f"the web server did not start within {timeout:.0f} s")
        time.sleep(0.02)
    return RunningServer(_url(sock, settings.web_host), server, thread, sock)
