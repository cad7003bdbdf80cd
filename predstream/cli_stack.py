"""``predstream up | down | status | migrate``: the local stack and the database schema."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Any

import typer

from . import _cli_options as opt
from ._cli_common import one_line_errors


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("migrate")(migrate)


def _print_env(state: dict[str, Any]) -> None:
    from predstream.schemas import DEFAULT_TOPIC

    typer.echo(f"PREDSTREAM_KAFKA_BOOTSTRAP={state['bootstrap']}")
    typer.echo(f"PREDSTREAM_DATABASE_URL={state['database_url']}")
    if state.get("topic", DEFAULT_TOPIC) != DEFAULT_TOPIC:  # other shells need it too
        typer.echo(f"PREDSTREAM_TOPIC={state['topic']}")


@one_line_errors
def up(
    partitions: int = typer.Option(6, min=1, help="Partitions of the predictions topic."),
    kafka_port: int = typer.Option(0, help="Broker port (0: any free port)."),
    pg_port: int = typer.Option(0, help="PostgreSQL port (0: any free port)."),
) -> None:
    """Start the embedded broker and PostgreSQL, create the topics, apply the migrations."""
    from predstream import local
    from predstream.consumer import ConsumerSettings

    settings = opt.cli_settings(ConsumerSettings)
    state = local.up(topic=settings.topic, partitions=partitions, kafka_port=kafka_port, pg_port=pg_port)
    typer.echo(f"local stack up (data and logs in {state['home']}); other predstream commands find it by themselves.")
    _print_env(state)


@one_line_errors
def down() -> None:
    """Stop the local stack started by `predstream up`."""
    from predstream import local

    typer.echo("local stack stopped" if local.down() else "no local stack was running")


@one_line_errors
def status(as_json: bool = typer.Option(False, "--json", help="Print the state as JSON.")) -> None:
    """Say whether a local stack runs, and where. Exit 1 when none runs."""
    from predstream import local

    state = local.status()
    if state is None:
        typer.echo("no local stack running (start one with `predstream up`)")
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(state, indent=2))
        return
    from datetime import datetime

    since = datetime.fromtimestamp(state["started_at"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    pids = state.get("pids", {})
    typer.echo(f"local stack running since {since} (broker pid {pids.get('broker')}, "
               f"PostgreSQL pid {pids.get('postgres')}; data and logs in {state['home']})")
    _print_env(state)


@one_line_errors
def migrate(
    database_url: str | None = opt.DATABASE_URL,
    migrations_dir: Path | None = opt.MIGRATIONS_DIR,
    dry_run: bool = typer.Option(False, "--dry-run", help="List pending migrations; apply nothing."),
) -> None:
    """Apply pending SQL migrations, each once, in order, under an advisory lock."""
    from predstream.consumer import ConsumerSettings, apply_migrations, pending_migrations

    settings = opt.cli_settings(ConsumerSettings, database_url=database_url, migrations_dir=migrations_dir)
    settings.require_database_url()
    if dry_run:
        pending = pending_migrations(settings)
        typer.echo("\n".join(p.name for p in pending) if pending else "nothing to apply")
        return
    applied = apply_migrations(settings)
    typer.echo("applied: " + ", ".join(applied) if applied else "nothing to apply: the database is up to date")
