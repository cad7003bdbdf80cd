"""``predstream sets``: curated prediction sets (create from a dataset file, list, show, export, delete).

``sets create`` reads the dataset with the training side's sampler, so each item keeps the
``source_index`` and ``prompt_id`` a training run would give it, builds the set with
:func:`predstream.producer.prediction_set_from_samples` (the rules of
:mod:`predstream.schemas.prediction_set`) and stores it with :func:`predstream.consumer.create_set`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from . import _cli_options as opt
from ._cli_common import fail, one_line_errors

if TYPE_CHECKING:
    from predstream.consumer import ConsumerSettings, StoredSet
    from predstream.producer import Sample

sets_app = typer.Typer(help="Curated prediction sets: fixed, named lists of eval prompts.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sets_app, name="sets")


def _settings(database_url: str | None) -> ConsumerSettings:
    from predstream.consumer import ConsumerSettings

    settings = opt.cli_settings(ConsumerSettings, database_url=database_url)
    settings.require_database_url()
    return settings


@sets_app.command("create")
@one_line_errors
def create(
    name: str = typer.Argument(..., help="Name of the new set."),
    source: Path = typer.Option(..., "--from", help="Dataset file: a JSON array or JSON lines (one row per line)."),
    indices: str | None = typer.Option(None, "--indices", metavar="1,5,9",
                                       help="Rows to take (source_index: array index or 0-based line index), "
                                            "in this order."),
    sample: int | None = typer.Option(None, "--sample", min=1, metavar="N", help="Draw N rows at random ..."),
    seed: int = typer.Option(0, "--seed", help="... with this seed (same file + seed = same rows)."),
    prompt_field: str = typer.Option("prompt", "--prompt-field", help="Field holding a text prompt."),
    messages_field: str = typer.Option("messages", "--messages-field", help="Field holding chat messages."),
    answer_field: str | None = typer.Option(None, "--answer-field",
                                            help="Field holding the reference answer "
                                                 "(default: ground_truth, answer, completion, response)."),
    description: str | None = typer.Option(None, "--description", help="A line saying what the set is for."),
    database_url: str | None = opt.DATABASE_URL,
) -> None:
    """Create a set from rows of a dataset file (--indices or --sample N --seed S)."""
    from predstream.consumer import create_set
    from predstream.producer import prediction_set_from_samples

    if (indices is None) == (sample is None):
        raise fail("give either --indices 1,5,9 or --sample N (with --seed S)")
    samples = _pick(source, indices, sample, seed, prompt_field, messages_field, answer_field)
    settings = _settings(database_url)
    pset = prediction_set_from_samples(name, samples, source=str(source), seed=seed if sample is not None else None,
                                       description=description)
    stored, created = create_set(settings, pset)
    if created:
        typer.echo(f"created set {stored.name!r} ({stored.set_id}, {stored.item_count} items)")
    else:
        typer.echo(f"set {stored.name!r} ({stored.set_id}) already exists with the same items: nothing to do")


def _pick(source: Path, indices: str | None, sample: int | None, seed: int, prompt_field: str,
          messages_field: str, answer_field: str | None) -> list[Sample]:
    """The rows to store, each checked against the event contract once, here: a row that
    training could not send is skipped with a warning (--sample) or stops the command."""
    from predstream.producer import (
        DEFAULT_GROUND_TRUTH_FIELDS,
        NO_ROW,
        BadRow,
        RowFormat,
        check_dataset_id,
        read_dataset,
        row_to_sample,
        sample_dataset,
    )

    fmt = RowFormat(prompt_field=prompt_field, messages_field=messages_field,
                    ground_truth_field=answer_field or DEFAULT_GROUND_TRUTH_FIELDS)
    if sample is not None:
        return sample_dataset(source, sample, seed=seed, fmt=fmt)
    wanted = _indices(indices or "")
    data = read_dataset(source)
    check_dataset_id(data.dataset_id)
    rows = data.rows
    samples: list[Sample] = []
    for position, index in enumerate(wanted):
        if index >= len(rows):
            raise fail(f"{source} has {len(rows)} rows (0..{len(rows) - 1}); there is no row {index}")
        row = rows[index]
        if row is NO_ROW:
            raise fail(f"{data.where(index)} is blank or not JSON")
        try:
            samples.append(row_to_sample(row, source_index=index, sample_index=position, fmt=fmt,
                                         sample_source_id=data.dataset_id))
        except BadRow as exc:
            raise fail(f"{data.where(index)} {exc}") from None
    return samples


def _indices(text: str) -> list[int]:
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit():
            raise fail(f"bad index {part!r}: --indices takes non-negative integers, e.g. 1,5,9")
        if int(part) in out:
            raise fail(f"index {part} is given twice")
        out.append(int(part))
    if not out:
        raise fail("--indices is empty: give row indices, e.g. 1,5,9")
    return out


@sets_app.command("list")
@one_line_errors
def list_(
    as_json: bool = typer.Option(False, "--json", help="One JSON array."),
    database_url: str | None = opt.DATABASE_URL,
) -> None:
    """List the stored sets."""
    from predstream.consumer import list_sets

    sets = list_sets(_settings(database_url))
    if as_json:
        typer.echo(json.dumps([_head_json(s) for s in sets], indent=1))
        return
    if not sets:
        typer.echo("no prediction sets yet (create one with `predstream sets create NAME --from FILE ...`)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "set_id", "items", "source", "seed", "created")
    for s in sets:
        table.add_row(s.name, s.set_id, str(s.item_count), s.source or "", "" if s.seed is None else str(s.seed),
                      s.created_at.strftime("%Y-%m-%d %H:%M") if s.created_at else "")
    Console(width=200).print(table)


@sets_app.command("show")
@one_line_errors
def show(
    name: str = typer.Argument(..., help="Set name or set_id."),
    as_json: bool = typer.Option(False, "--json", help="The export file's JSON."),
    database_url: str | None = opt.DATABASE_URL,
) -> None:
    """Show a set and its items."""
    from predstream.consumer import get_set

    stored = get_set(_settings(database_url), name)
    if as_json:
        typer.echo(json.dumps(stored.to_json(), ensure_ascii=False, indent=1))
        return
    typer.echo(f"{stored.name} ({stored.set_id}): {stored.item_count} items"
               + (f" from {stored.source}" if stored.source else "")
               + (f", seed {stored.seed}" if stored.seed is not None else ""))
    if stored.description:
        typer.echo(stored.description)
    for it in stored.items:
        text = it.prompt if it.prompt is not None else " / ".join(m["content"] for m in it.messages or ())
        text = " ".join(text.split())
        typer.echo(f"{it.item_index:>4}  row {'-' if it.source_index is None else it.source_index:<6} "
                   f"{it.prompt_id[:12]}  {text[:80]}{'…' if len(text) > 80 else ''}")


@sets_app.command("export")
@one_line_errors
def export(
    name: str = typer.Argument(..., help="Set name or set_id."),
    path: Path = typer.Argument(..., help="JSON file to write (training reads it with prediction_set=FILE)."),
    database_url: str | None = opt.DATABASE_URL,
) -> None:
    """Write a set to a JSON file."""
    from predstream.consumer import export_set

    stored = export_set(_settings(database_url), name, path)
    typer.echo(f"wrote set {stored.name!r} ({stored.set_id}, {stored.item_count} items) to {path}")


@sets_app.command("delete")
@one_line_errors
def delete(
    name: str = typer.Argument(..., help="Set name or set_id."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
    database_url: str | None = opt.DATABASE_URL,
) -> None:
    """Delete a set (predictions already made with it keep their set_id)."""
    from predstream.consumer import delete_set

    if not yes and not typer.confirm(f"delete prediction set {name!r}?"):
        raise typer.Exit(1)
    if not delete_set(_settings(database_url), name):
        raise fail(f"no prediction set named {name!r}")
    typer.echo(f"deleted set {name!r}")


def _head_json(s: StoredSet) -> dict[str, Any]:
    return {"set_id": s.set_id, "name": s.name, "item_count": s.item_count, "source": s.source, "seed": s.seed,
            "description": s.description, "created_at": s.created_at.isoformat() if s.created_at else None}
