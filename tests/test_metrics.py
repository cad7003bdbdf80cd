"""Metrics and health: the Prometheus endpoint serves the worker's counters; health has an exit code."""

from __future__ import annotations

import signal
import urllib.request

import pytest
from typer.testing import CliRunner

from predstream.consumer.metrics import ConsumerMetrics, check_health, serve_metrics
from predstream.local import free_port
from support import make_event, wait_for
from support.consumer_kit import produce_events, rows_reach, start_cli_consumer


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_endpoint_serves_counters_and_health_follows_the_probe():
    metrics = ConsumerMetrics()
    metrics.events_consumed.inc(7)
    metrics.dead_lettered.labels("bad-framing").inc(2)
    metrics.rows_upserted.labels("inserted").inc(5)
    state = {"ok": True}
    server = serve_metrics(metrics, lambda: (state["ok"], {"database": "up" if state["ok"] else "down"}), 0,
                           host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    try:
        code, body = _get(base + "/metrics")
        assert code == 200
        assert "predstream_events_consumed_total 7.0" in body
        assert 'predstream_dead_lettered_total{reason="bad-framing"} 2.0' in body
        assert 'predstream_rows_upserted_total{result="inserted"} 5.0' in body
        assert "predstream_db_up 1.0" in body
        assert _get(base + "/healthz")[0] == 200
        assert check_health(base) == (True, '200 {"status": "ok", "database": "up"}')
        state["ok"] = False
        code, body = _get(base + "/healthz")
        assert code == 503 and '"database": "down"' in body
        assert check_health(base + "/healthz")[0] is False
        assert _get(base + "/nope")[0] == 404
    finally:
        server.close()


def test_health_command_exits_0_when_healthy_and_1_otherwise():
    from predstream.cli import app

    metrics = ConsumerMetrics()
    state = {"ok": True}
    server = serve_metrics(metrics, lambda: (state["ok"], {}), 0, host="127.0.0.1")
    runner = CliRunner()
    try:
        url = f"http://127.0.0.1:{server.port}"
        assert runner.invoke(app, ["health", "--url", url]).exit_code == 0
        state["ok"] = False
        assert runner.invoke(app, ["health", "--url", url]).exit_code == 1
    finally:
        server.close()
    nobody = f"http://127.0.0.1:{free_port()}/healthz"
    assert runner.invoke(app, ["health", "--url", nobody, "--timeout", "1"]).exit_code == 1


@pytest.mark.integration
def test_a_consuming_worker_serves_its_counters_lag_and_health(consumer_settings, kafka_bootstrap, database_url,
                                                               tmp_path):
    port = free_port()
    proc = start_cli_consumer(consumer_settings, "--metrics-port", str(port), "--batch-size", "50",
                              log_path=tmp_path / "consume.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: check_health(base)[0], 30, "a healthy worker")
        produce_events(kafka_bootstrap, consumer_settings.topic, (make_event(i) for i in range(200)))
        wait_for(rows_reach(database_url, 200), 60, "200 rows")

        def _scraped() -> str | None:
            body = _get(base + "/metrics")[1]
            ready = "predstream_events_consumed_total 200.0" in body and "predstream_consumer_lag{" in body
            return body if ready else None

        body = wait_for(_scraped, 15, "the counters and lag on /metrics")
        assert 'predstream_rows_upserted_total{result="inserted"} 200.0' in body
        assert "predstream_batch_size_count" in body and "predstream_batch_seconds_bucket" in body
        assert f'predstream_consumer_lag{{partition="0",topic="{consumer_settings.topic}"}} 0.0' in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert check_health(base, timeout_s=1)[0] is False  # gone: unhealthy
    finally:
        if proc.poll() is None:
            proc.kill()
