"""``predstream identify``: give the old writer's rows their prompt_id and event_id."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from . import _cli_options as opt
from ._cli_common import one_line_errors

if TYPE_CHECKING:
    from predstream.consumer import IdentifyReport

_SHOWN = 50


def register(app: typer.Typer) -> None:
    app.command("identify")(identify)


@one_line_errors
def identify(
    database_url: str | None = opt.DATABASE_URL,
    job: list[str] | None = typer.Option(None, "--job", help="Only rows of this job id (repeatable)."),
    batch_size: int | None = opt.IDENTIFY_BATCH_SIZE,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress lines."),
) -> None:
    """Give rows written before predstream (event_id NULL) their prompt_id and event_id, in small
    batches on the live table, so `compare` shows them and a backfill of their export adds nothing.
    Safe to run again (it resumes; identified rows are not touched). Exit 1 when some rows could
    not be identified (they are listed)."""
    from predstream.consumer import ConsumerSettings, identify_legacy_rows

    settings = opt.cli_settings(ConsumerSettings, database_url=database_url, identify_batch_size=batch_size)
    settings.require_database_url()
    last = [0.0]

    def progress(report: IdentifyReport) -> None:
        now = time.monotonic()
        if not no_progress and now - last[0] >= 1.0:
            last[0] = now
            typer.echo(report.progress_line(), err=True)

    report = identify_legacy_rows(settings, jobs=job or None, progress=progress)
    for label, items in (("duplicate", report.duplicates), ("not identified", report.problems)):
        for item in items[:_SHOWN]:
            typer.echo(f"{label}: {item}", err=True)
        if len(items) > _SHOWN:
            typer.echo(f"{label}: ... and {len(items) - _SHOWN} more", err=True)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)
