"""``predstream consume | dlq list | dlq redrive | health``: the consumer service's commands."""

from __future__ import annotations

import functools
import json
import logging

import typer

from predstream.consumer import REASONS

from . import _cli_options as opt
from ._cli_common import configure_logging, fail, one_line_errors

dlq_app = typer.Typer(help="Inspect and redrive dead letters (events the consumer could not store).",
                      no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("consume")(consume)
    app.command("health")(health)
    app.add_typer(dlq_app, name="dlq")
    dlq_app.command("list")(dlq_list)
    dlq_app.command("redrive")(dlq_redrive)


_REASON_HELP = ("Only dead letters whose reason starts with this (repeatable), e.g. db-rejected or nul. "
                f"Reasons: {REASONS}.")


@one_line_errors
def consume(
    workers: int = typer.Option(1, "--workers", min=1, max=64,
                                help="Worker processes (each one consumer of the group)."),
    bootstrap: str | None = opt.BOOTSTRAP,
    topic: str | None = opt.TOPIC,
    group: str | None = opt.GROUP,
    database_url: str | None = opt.DATABASE_URL,
    batch_size: int | None = opt.BATCH_SIZE,
    batch_max_wait_ms: int | None = opt.BATCH_MAX_WAIT_MS,
    metrics_port: int | None = opt.METRICS_PORT,
    shutdown_timeout_s: float | None = opt.SHUTDOWN_TIMEOUT,
    kafka_option: list[str] | None = opt.KAFKA_OPTION,
) -> None:
    """Consume prediction events into Postgres until SIGTERM/SIGINT (exit 0 after a clean stop)."""
    from predstream.consumer import ConsumerSettings, run_worker, run_worker_processes

    settings = opt.cli_settings(
        ConsumerSettings, kafka_bootstrap=bootstrap, topic=topic, group_id=group, database_url=database_url,
        batch_size=batch_size, batch_max_wait_ms=batch_max_wait_ms, metrics_port=metrics_port,
        shutdown_timeout_s=shutdown_timeout_s, kafka_options=kafka_option,
    )
    settings.require_bootstrap()
    settings.require_database_url()
    if workers == 1:
        run_worker(settings)
        return
    root = logging.getLogger()
    json_logs = any(type(h.formatter).__name__ == "_JsonFormatter" for h in root.handlers)
    init = functools.partial(configure_logging, logging.getLevelName(root.level), json_logs)
    code = run_worker_processes(settings, workers, init=init)
    if code:
        raise typer.Exit(code)


@one_line_errors
def dlq_list(
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many dead letters."),
    reason: list[str] | None = typer.Option(None, "--reason", help=_REASON_HELP),
    fmt: str = typer.Option("table", "--format", help="table or json."),
    bootstrap: str | None = opt.BOOTSTRAP,
    topic: str | None = opt.TOPIC,
    kafka_option: list[str] | None = opt.KAFKA_OPTION,
) -> None:
    """List dead letters: offset, reason, error, where each event came from, and how often it was redriven."""
    from predstream.consumer import ConsumerSettings, list_dead_letters

    if fmt not in ("table", "json"):
        raise typer.BadParameter("use --format table or --format json", param_hint="--format")
    settings = opt.cli_settings(ConsumerSettings, kafka_bootstrap=bootstrap, topic=topic, kafka_options=kafka_option)
    letters = list_dead_letters(settings, limit, reasons=reason or None)
    if fmt == "json":
        typer.echo(json.dumps([d.as_dict() for d in letters], indent=2))
        return
    if not letters:
        which = f" with a reason starting {' or '.join(reason)}" if reason else ""
        typer.echo(f"no dead letters in {settings.dlq_topic}{which}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dead letters in {settings.dlq_topic} (first {len(letters)})")
    for col in ("partition", "offset", "reason", "error", "original topic", "orig. partition", "orig. offset",
                "redrives"):
        table.add_column(col, overflow="fold")
    for d in letters:
        table.add_row(
            str(d.partition), str(d.offset), d.reason, d.error[:200], d.original_topic or "",
            "" if d.original_partition is None else str(d.original_partition),
            "" if d.original_offset is None else str(d.original_offset),
            f"{d.redrive_count} (parked)" if d.parked() else str(d.redrive_count),
        )
    Console().print(table)


@one_line_errors
def dlq_redrive(
    reason: list[str] | None = typer.Option(None, "--reason", help=_REASON_HELP + " Default: all."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be redriven; publish and record nothing."),
    from_beginning: bool = typer.Option(False, "--from-beginning",
                                        help="Reconsider every dead letter, not only those after the last redrive."),
    redrive_limit: int = typer.Option(3, "--redrive-limit", min=1,
                                      help="Leave (park) a dead letter already redriven this many times."),
    bootstrap: str | None = opt.BOOTSTRAP,
    topic: str | None = opt.TOPIC,
    group: str | None = opt.GROUP,
    kafka_option: list[str] | None = opt.KAFKA_OPTION,
) -> None:
    """Re-publish dead letters' original events to the topic (after fixing what rejected them).

    Reads up to the end of the dead-letter topic as it is when the command starts, records
    progress as it goes, and parks (leaves) a dead letter already redriven --redrive-limit times.
    """
    from predstream.consumer import ConsumerSettings, redrive

    settings = opt.cli_settings(ConsumerSettings, kafka_bootstrap=bootstrap, topic=topic, group_id=group,
                                kafka_options=kafka_option)
    result = redrive(settings, reasons=reason or None, dry_run=dry_run, from_beginning=from_beginning,
                     limit=redrive_limit)
    if reason and result.filter_matched_nothing:
        present = ", ".join(f"{r} ({n})" for r, n in sorted(result.seen.items()))
        raise fail(f"--reason {' / '.join(reason)} matches none of the {result.read} dead letter(s) read; "
                   f"their reasons: {present}. A reason matches when it starts with the text given. "
                   "Nothing was redriven or recorded.", 1)
    verb = "would redrive" if dry_run else "redriven"
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(result.by_reason.items()))
    line = (f"{verb} {result.redriven} dead letter(s) to {settings.topic}" + (f" ({detail})" if detail else "")
            + f"; skipped {result.skipped}")
    if result.parked:
        line += (f"; parked {result.parked} (redriven {redrive_limit} times already: fix the cause, then "
                 "`predstream dlq redrive --from-beginning --redrive-limit N`)")
    typer.echo(line)


@one_line_errors
def health(
    url: str = typer.Option("http://127.0.0.1:9400/healthz", "--url",
                            help="A worker's health URL (/healthz is added when no path is given)."),
    timeout_s: float = typer.Option(5.0, "--timeout", help="Seconds to wait for an answer."),
) -> None:
    """Exit 0 when the worker answers healthy (polling, database reachable), 1 otherwise."""
    from predstream.consumer import check_health

    ok, line = check_health(url, timeout_s)
    typer.echo(("healthy: " if ok else "unhealthy: ") + line, err=not ok)
    if not ok:
        raise typer.Exit(1)
