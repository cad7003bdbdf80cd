"""docker-compose.yml stays valid, and its predstream commands are ones that exist."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from predstream.cli import app

_ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((_ROOT / "docker-compose.yml").read_text())


def test_compose_has_kafka_in_kraft_postgres_migrate_and_consumer():
    services = _compose()["services"]
    assert {"kafka", "postgres", "migrate", "consumer", "topics"} <= set(services)
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["consumer"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_topics_keep_history_for_replay():
    cmd = " ".join(_compose()["services"]["topics"]["command"])
    assert "--partitions 6" in cmd and "retention.ms=-1" in cmd and "compact" not in cmd


def test_every_predstream_command_in_compose_parses():
    runner = CliRunner()
    for name, svc in _compose()["services"].items():
        if svc.get("build") is None:
            continue
        args = list(svc["command"])
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, f"{name}: predstream {' '.join(args)}: {result.output}"
    hc = _compose()["services"]["consumer"]["healthcheck"]["test"]
    assert hc[:2] == ["CMD", "predstream"]
    assert runner.invoke(app, [*hc[2:], "--help"]).exit_code == 0
