"""``predstream replay`` and ``predstream backfill``: fill a database from the topic or from files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from . import _cli_options as opt
from ._cli_common import fail, one_line_errors

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
    app.command("backfill")(backfill)


@one_line_errors
def replay(
    from_beginning: bool = typer.Option(False, "--from-beginning",
                                        help="Every partition from its first offset (the default)."),
    from_timestamp: str | None = typer.Option(None, "--from-timestamp", metavar="ISO8601",
                                              help="From the first event at or after this time (no zone = UTC)."),
    from_offsets: str | None = typer.Option(None, "--from-offsets", metavar="P:O,P:O",
                                            help="Only these partitions, from these offsets."),
    to_end: bool = typer.Option(False, "--to-end",
                                help="Read each partition to its end as it is when reached "
                                     "(default: stop at the high watermarks taken at start)."),
    job: str | None = typer.Option(None, "--job", help="Only events of this job id."),
    database_url: str | None = opt.DATABASE_URL,
    topic: str | None = opt.TOPIC,
    batch_size: int | None = opt.BATCH_SIZE,
    dlq: bool = typer.Option(False, "--dlq",
                             help="Send invalid events to the dead-letter topic again (the live worker already did)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    writers: int = typer.Option(2, "--writers", min=1, max=8,
                                help="Batches written at once, each through its own database connection."),
    bootstrap: str | None = opt.BOOTSTRAP,
    kafka_option: list[str] | None = opt.KAFKA_OPTION,
) -> None:
    """Read the topic again (without touching the live consumer group) into a database."""
    from predstream.consumer import ConsumerSettings, DeadLetterWriter, parse_offsets, parse_timestamp, run_replay

    if sum((from_beginning, from_timestamp is not None, from_offsets is not None)) > 1:
        raise fail("give one of --from-beginning, --from-timestamp, --from-offsets")
    settings = opt.cli_settings(ConsumerSettings, database_url=database_url, topic=topic, kafka_bootstrap=bootstrap,
                                batch_size=batch_size, kafka_options=kafka_option)
    settings.require_bootstrap()
    settings.require_database_url()
    since = parse_timestamp(from_timestamp) if from_timestamp else None
    offsets = parse_offsets(from_offsets) if from_offsets else None
    dead_letters = DeadLetterWriter(settings) if dlq else None
    try:
        with _progress(not no_progress, f"replaying {settings.topic}") as progress:
            stats = run_replay(
                settings, from_timestamp=since, from_offsets=offsets, to_end=to_end, job_id=job,
                dead_letters=dead_letters, progress=progress, writers=writers,
            )
    finally:
        if dead_letters is not None:
            dead_letters.close()
    typer.echo(stats.summary())
    if stats.by_reason:
        typer.echo("not stored, by reason: " + ", ".join(f"{r} {n}" for r, n in sorted(stats.by_reason.items())))
    if job is not None and stats.read == stats.skipped_job + stats.skipped_before:  # a typo in --job?
        seen = sorted(stats.other_jobs.items(), key=lambda kv: -kv[1])[:5]
        listed = ", ".join(f"{j!r} ({n})" for j, n in seen)
        raise fail(f"no event of job {job!r} in what was read from {settings.topic}"
                   + (f"; jobs there: {listed}" if seen else " (nothing was read)") + ": check --job", 1)


@one_line_errors
def backfill(
    files: list[Path] = typer.Argument(..., help="Spool files and/or JSON lines exports of the old table's rows."),
    database_url: str | None = opt.DATABASE_URL,
    strict: bool = typer.Option(False, "--strict", help="Check every row first; load nothing if one is bad."),
    batch_size: int | None = opt.BATCH_SIZE,
) -> None:
    """Load spool files and old-writer exports into the database (idempotent: loading twice adds nothing)."""
    from predstream.consumer import ConsumerSettings, run_backfill

    settings = opt.cli_settings(ConsumerSettings, database_url=database_url, batch_size=batch_size)
    settings.require_database_url()
    shown = [0]

    def on_problem(problem: object) -> None:
        shown[0] += 1
        if shown[0] <= 50:
            typer.echo(f"not loaded: {problem}", err=True)
        elif shown[0] == 51:
            typer.echo("not loaded: ... (more problems; counts in the summary)", err=True)

    report = run_backfill(files, settings, strict=strict, on_problem=on_problem)
    for f in report.files:
        tail = f", damaged tail at byte {f.bad_tail[0]} ({f.bad_tail[1]} bytes: {f.bad_tail[2]})" if f.bad_tail else ""
        typer.echo(
            f"{f.path} [{f.kind}]: read {f.read}, inserted {f.inserted}, updated {f.updated}, "
            f"unchanged {f.unchanged}, invalid {f.invalid}, rejected {f.rejected}{tail}"
        )
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


class _progress:
    """A rich progress bar (count, rate, ETA) on stderr, or nothing."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled, self.label = enabled, label
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} msg/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=None, rate="-")
        return self._update

    def _update(self, done: int, total: int) -> None:
        assert self._bar is not None and self._task is not None
        elapsed = self._bar.tasks[0].elapsed or 0.0
        rate = f"{done / elapsed:,.0f}" if elapsed > 0.05 and done else "-"
        self._bar.update(self._task, completed=done, total=total, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
