"""``predstream serve``: the web view and JSON API over the configured database."""

from __future__ import annotations

import typer

from . import _cli_options as opt
from ._cli_common import fail, one_line_errors


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@one_line_errors
def serve(
    host: str | None = opt.WEB_HOST,
    port: int | None = opt.WEB_PORT,
    public: bool = typer.Option(False, "--public", help="Allow a --host that other machines can reach "
                                "(or PREDSTREAM_WEB_PUBLIC=true); the pages have no login."),
    database_url: str | None = opt.DATABASE_URL,
) -> None:
    """Serve the web view (runs, compare, prompt history, search, sets) and the JSON API /api/v1."""
    try:
        from predstream.web import ServeSettings
        from predstream.web import serve as run_server
    except ImportError as exc:
        raise fail(str(exc)) from None
    settings = opt.cli_settings(ServeSettings, web_host=host, web_port=port, web_public=public or None,
                                database_url=database_url)
    settings.require_database_url()

    def _ready(url: str) -> None:
        typer.echo(f"predstream web view: {url}/  "
                   f"(API: {url}/api/v1, OpenAPI: {url}/api/v1/openapi.json; Ctrl-C stops)")

    run_server(settings, on_ready=_ready)
