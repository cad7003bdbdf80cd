"""``predstream compare``: how runs answered the same prompts, step by step."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _cli_options as opt
from ._cli_common import fail, one_line_errors


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)


@one_line_errors
def compare(
    jobs: list[str] = typer.Argument(..., help="Job ids to compare."),
    prompt_id: str | None = typer.Option(None, "--prompt-id", help="Only this prompt."),
    prompts: int = typer.Option(5, "--prompts", min=1,
                                help="How many prompts to show (those every job predicted for)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    plot: str | None = typer.Option(None, "--plot", help="Also write an accuracy plot to this PNG file."),
    database_url: str | None = opt.DATABASE_URL,
) -> None:
    """Compare runs: predictions per step for the same prompt_id, and accuracy per step."""
    from predstream import report
    from predstream.consumer import ConsumerSettings, compare_runs

    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")
    if plot:
        _check_plot_path(Path(plot))
    settings = opt.cli_settings(ConsumerSettings, database_url=database_url)
    settings.require_database_url()
    result = compare_runs(settings, jobs, prompt_id=prompt_id, max_prompts=prompts)
    if not any(result.accuracy.values()) and not result.prompts:
        raise fail(f"no predictions found for {', '.join(jobs)}: check the job ids (and --database-url)", 1)
    missing = [j for j in result.jobs if not result.accuracy.get(j)]
    if missing:  # a typo among the job ids: say so rather than show an empty column
        found = [j for j in result.jobs if j not in missing]
        raise fail(f"no predictions found for {', '.join(missing)} (found: {', '.join(found)}): "
                   "check the job ids (and --database-url)", 1)
    if prompt_id is not None and not result.prompts:
        raise fail(f"no predictions for prompt_id {prompt_id!r} in {', '.join(jobs)}: the prompt ids are in "
                   f"`predstream compare {' '.join(jobs)} --format csv`", 1)
    if fmt == "csv":
        typer.echo(report.comparison_csv(result), nl=False)
    elif fmt == "json":
        typer.echo(report.comparison_json(result))
    else:
        report.print_comparison(result)
    if plot:
        try:
            written = report.plot_comparison(result, plot)
        except OSError as exc:
            raise fail(f"cannot write the plot to {plot}: {exc.strerror or exc}") from None
        typer.echo(f"plot written to {written}", err=True)


def _check_plot_path(path: Path) -> None:
    """Before any work: the plot's folder must exist and be writable."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise fail(f"cannot write the plot to {path}: folder {folder} does not exist "
                   "(create it or give another --plot)")
    if path.is_dir():
        raise fail(f"cannot write the plot to {path}: it is a folder; give a file name such as {path / 'accuracy.png'}")
    import os

    if not os.access(folder, os.W_OK):
        raise fail(f"cannot write the plot to {path}: folder {folder} is not writable")
