"""``predstream compare``: how runs answered the same prompts, step by step."""

from __future__ import annotations

from typing import List, Optional

import typer

from ._cli_common import one_line_errors


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)


@one_line_errors
def compare(
    jobs: List[str] = typer.Argument(..., help="Job ids to compare."),
    prompt_id: Optional[str] = typer.Option(None, "--prompt-id", help="Only this prompt."),
    prompts: int = typer.Option(5, "--prompts", min=1, help="How many prompts to show (those every job predicted for)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Also write an accuracy plot to this PNG file."),
    database_url: Optional[str] = typer.Option(None, envvar="PREDSTREAM_DATABASE_URL", help="Default: the local stack's."),
) -> None:
    """Compare runs: predictions per step for the same prompt_id, and accuracy per step."""
    import psycopg

    from consumer.compare import compare_runs
    from consumer.settings import ConsumerSettings
    from predstream import report
    from schemas.settings import load_settings

    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")
    settings = load_settings(ConsumerSettings, database_url=database_url)
    with psycopg.connect(settings.require_database_url()) as conn:
        result = compare_runs(conn, jobs, prompt_id=prompt_id, max_prompts=prompts)
    if not any(result.accuracy.values()) and not result.prompts:
        typer.echo(f"no predictions found for {', '.join(jobs)}", err=True)
        raise typer.Exit(1)
    if fmt == "csv":
        typer.echo(report.comparison_csv(result), nl=False)
    elif fmt == "json":
        typer.echo(report.comparison_json(result))
    else:
        report.print_comparison(result)
    if plot:
        typer.echo(f"plot written to {report.plot_comparison(result, plot)}", err=True)
