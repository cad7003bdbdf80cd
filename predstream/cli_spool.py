"""``predstream spool drain | status``: the events a publisher kept on local disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from . import _cli_options as opt
from ._cli_common import fail, one_line_errors

if TYPE_CHECKING:
    from predstream.producer import ProducerSettings

spool_app = typer.Typer(
    name="spool",
    help="Events kept on local disk while Kafka was unreachable: show them, send them.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(spool_app, name="spool")


def _settings(spool_dir: Path | None, topic: str | None = None, kafka_bootstrap: str | None = None,
              kafka_options: list[str] | None = None) -> ProducerSettings:
    from predstream.producer import ProducerSettings

    return opt.cli_settings(ProducerSettings, spool_dir=spool_dir, topic=topic, kafka_bootstrap=kafka_bootstrap,
                            kafka_options=kafka_options)


@spool_app.command("drain")
@one_line_errors
def drain(
    spool_dir: Path | None = opt.SPOOL_DIR,
    timeout: float = typer.Option(60.0, "--timeout", min=0.1,
                                  help="Give up after this many seconds; what is left stays spooled."),
    topic: str | None = opt.TOPIC,
    bootstrap: str | None = opt.BOOTSTRAP,
    kafka_option: list[str] | None = opt.KAFKA_OPTION,
) -> None:
    """Re-send every spooled event to Kafka; a segment is deleted once all its events are
    acknowledged. Exit 1 when some events are still spooled afterwards."""
    from predstream.producer import drain_spool

    settings = _settings(spool_dir, topic, bootstrap, kafka_option)
    settings.require_bootstrap()
    if not settings.spool_dir.is_dir():
        typer.echo(f"spool {settings.spool_dir}: nothing to send (no such folder)")
        return

    def progress(path: Path, sent: int, left: int) -> None:
        typer.echo(f"  {path.name}: {sent} sent" + (f", {left} undelivered (kept)" if left else ""))

    report = drain_spool(settings, timeout, progress=progress)
    typer.echo(f"spool {settings.spool_dir} -> topic {settings.topic}: {report}")
    if report.registry_error:
        raise fail(f"some events are still spooled: {report.registry_error}; run `predstream spool drain` "
                   "again once the schema registry answers", 1)
    if report.left or report.segments_untried or report.segments_busy:
        raise fail("some events are still spooled: is the broker reachable? run `predstream spool drain` again", 1)


@spool_app.command("status")
@one_line_errors
def status(
    spool_dir: Path | None = opt.SPOOL_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Segments, records and bytes in the spool, and any damaged tails."""
    from predstream.producer import spool_status

    directory = _settings(spool_dir).spool_dir
    segments = spool_status(directory)
    damaged_files = sorted(directory.glob("*.damaged")) if directory.is_dir() else []
    if as_json:
        typer.echo(json.dumps({
            "spool_dir": str(directory),
            "segments": len(segments),
            "records": sum(s.records for s in segments),
            "bytes": sum(s.bytes for s in segments),
            "bad_tails": sum(s.problem is not None for s in segments),
            "damaged_files": [str(p) for p in damaged_files],
            "detail": [
                {"path": str(s.path), "records": s.records, "bytes": s.bytes, "active": s.active,
                 "problem": s.problem, "bad_tail_offset": s.bad_tail_offset, "bad_tail_bytes": s.bad_tail_bytes}
                for s in segments
            ],
        }, indent=2))
        return
    if not directory.is_dir():  # e.g. a relative PREDSTREAM_SPOOL_DIR from another folder
        typer.echo(f"spool {directory}: no spool folder there; events are spooled to PREDSTREAM_SPOOL_DIR as the "
                   "training process saw it (a relative path is relative to that process's folder)")
    elif not segments:
        typer.echo(f"spool {directory}: empty")
    else:
        typer.echo(f"spool {directory}:")
        for s in segments:
            line = f"  {s.path.name}  {s.records} records  {s.bytes} bytes"
            if s.active:
                line += "  (being written)"
            if s.problem:
                line += f"  DAMAGED: {s.problem} at offset {s.bad_tail_offset} ({s.bad_tail_bytes} bytes)"
            typer.echo(line)
        bad = sum(s.problem is not None and not s.active for s in segments)
        typer.echo(f"total: {len(segments)} segments, {sum(s.records for s in segments)} records, "
                   f"{sum(s.bytes for s in segments)} bytes, {bad} damaged tails")
    for p in damaged_files:
        typer.echo(f"  set aside: {p.name} ({p.stat().st_size} bytes that were not a whole record)")
