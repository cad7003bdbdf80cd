"""Prometheus metrics of a consumer worker, and the small HTTP server for ``/metrics`` and ``/healthz``.

Each :class:`ConsumerMetrics` has its own registry, so several workers in one process (the
tests) do not collide. ``/healthz`` answers 200 while the worker polls and its database is
reachable, 503 otherwise, with a one-line JSON body saying which.

Consumer lag is computed from librdkafka's *cached* high watermarks (updated by every fetch
response) minus the consumer's position: brokers such as tansu under-report an uncached
high watermark.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition

__all__ = ["ConsumerMetrics", "MetricsServer", "serve_metrics", "check_health", "check_port_free"]

_log = logging.getLogger(__name__)

_SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000, 50_000)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ConsumerMetrics:
    """The worker's counters, histograms and gauges (names start with ``predstream_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "predstream_events_consumed", "Messages read from the topic (good and bad).", registry=r
        )
        self.rows_upserted = Counter(
            "predstream_rows_upserted", "Rows written to training_predictions, by result.", ["result"], registry=r
        )
        self.events_transcoded = Counter(
            "predstream_events_transcoded",
            "Messages turned straight into COPY rows; the rest were decoded by the pydantic path.",
            registry=r,
        )
        self.duplicates_skipped = Counter(
            "predstream_duplicates_skipped",
            "Events that changed nothing: identical resends, older versions, in-batch duplicates.",
            registry=r,
        )
        self.dead_lettered = Counter(
            "predstream_dead_lettered", "Events sent to the dead-letter topic, by reason.", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "predstream_batch_size", "Messages per written batch.", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "predstream_batch_seconds",
            "Time to store a batch: decode, upsert, dead letters, offset commit.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "predstream_consumer_lag", "Messages behind the high watermark, per partition.", ["topic", "partition"],
            registry=r
        )
        self.db_up = Gauge("predstream_db_up", "1 when the last database contact succeeded, else 0.", registry=r)
        self.db_outages = Counter("predstream_db_outages", "Times the database became unreachable.", registry=r)
        self.commits = Counter("predstream_offset_commits", "Offset commits after stored batches.", registry=r)
        for result in ("inserted", "updated"):
            self.rows_upserted.labels(result)
        self.db_up.set(1)

    def observe_lag(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Update the lag gauge of ``partitions`` from cached watermarks and positions."""
        try:
            positions = consumer.position(partitions)
        except Exception:  # not assigned any more, or closing: keep the old values
            return
        for tp in positions:
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
            except Exception:
                continue
            if high is None or high < 0 or tp.offset < 0:
                continue
            self.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - tp.offset))

    def forget_partitions(self, partitions: list[TopicPartition]) -> None:
        """Drop the lag series of partitions this worker no longer owns."""
        for tp in partitions:
            try:
                self.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``/metrics`` and ``/healthz`` on a daemon thread; :meth:`close` stops it."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    metrics: ConsumerMetrics,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    port: int,
    host: str = "0.0.0.0",
) -> MetricsServer:
    """Serve ``metrics`` and ``health()`` (``(ok, details)``) on ``host:port`` (0: any free port)."""

    class _Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/health"):
                try:
                    ok, details = health()
                except Exception as exc:  # a broken probe is an unhealthy worker
                    ok, details = False, {"error": str(exc)}
                body = json.dumps({"status": "ok" if ok else "unhealthy", **details}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            _log.debug("http: " + format, *args)

    try:
        server = ThreadingHTTPServer((host, port), _Handler)
    except OSError as exc:
        raise _port_error(port, exc) from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="predstream-metrics", daemon=True)
    thread.start()
    _log.info("metrics on http://%s:%d/metrics, health on /healthz", host, server.server_address[1])
    return MetricsServer(server, thread)


def check_port_free(port: int, host: str = "0.0.0.0") -> None:
    """Raise :class:`~consumer.errors.WorkerError` when ``host:port`` cannot be served on
    (another process listens there), before anything else starts."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise _port_error(port, exc) from None


def _port_error(port: int, exc: OSError) -> Exception:
    from .errors import WorkerError

    return WorkerError(
        f"cannot serve metrics on port {port}: {exc.strerror or exc} (another process uses it?); "
        "choose another --metrics-port / PREDSTREAM_METRICS_PORT, or 0 for none"
    )


def check_health(url: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """GET ``url`` (``/healthz`` appended when the URL has no path): ``(healthy, one line)``."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/healthz")
    target = urllib.parse.urlunsplit(parts)
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as resp:
            return resp.status == 200, f"{resp.status} {resp.read(500).decode('utf-8', 'replace').strip()}"
    except urllib.error.HTTPError as exc:
        return False, f"{exc.code} {exc.read(500).decode('utf-8', 'replace').strip()}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"cannot reach {target}: {reason}"
