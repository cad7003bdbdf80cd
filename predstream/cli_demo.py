"""``predstream demo``: train a tiny model twice and compare the runs' predictions."""

from __future__ import annotations

import typer

from ._cli_common import one_line_errors


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@one_line_errors
def demo(
    quick: bool = typer.Option(False, "--quick", help="A short run (about a minute): fewer steps and prompts."),
    output_dir: str = typer.Option("demo-output", "--output-dir", help="Where the plot and run folders go."),
    serve: bool = typer.Option(False, "--serve", help="Then serve the web view of the runs until Ctrl-C."),
    web_port: int = typer.Option(8765, "--web-port", min=0, max=65535,
                                 help="Port of the web view (taken: any free port)."),
) -> None:
    """Start the stack and a consumer, train a tiny model twice, compare the runs, print the web view's URL."""
    try:
        from predstream.demo import DemoPlan, run_demo
    except ImportError as exc:  # torch/transformers missing
        raise typer.Exit(code=_missing(exc)) from None
    run_demo(DemoPlan.quick() if quick else DemoPlan(), output_dir, serve=serve, web_port=web_port)


def _missing(exc: ImportError) -> int:
    typer.echo(f"error: the demo needs the training extra: pip install 'predstream[demo]' ({exc})", err=True)
    return 2
