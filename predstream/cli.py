"""The ``predstream`` command. Thin: parse, configure logging, call library functions.

Each ``cli_*`` module registers its commands on :data:`app`.
"""

from __future__ import annotations

import typer

from . import (
    _cli_common,
    cli_compare,
    cli_consumer,
    cli_demo,
    cli_identify,
    cli_replay,
    cli_serve,
    cli_sets,
    cli_spool,
    cli_stack,
)

app = typer.Typer(
    name="predstream",
    help="Stream training-eval predictions through Kafka into Postgres.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(
    log_level: str = typer.Option("INFO", "--log-level", envvar="PREDSTREAM_LOG_LEVEL",
                                  help="DEBUG, INFO, WARNING or ERROR."),
    json_logs: bool = typer.Option(False, "--json-logs",
                                   help="One JSON object per log line (or PREDSTREAM_JSON_LOGS=true)."),
) -> None:
    # the variable is read here, not by the option, so that a typo is one line, not a usage box
    json_logs = json_logs or _cli_common.env_flag("PREDSTREAM_JSON_LOGS")
    _cli_common.configure_logging(_cli_common.check_log_level(log_level), json_logs)


# Each command module defines register(app); the order is the order of `predstream --help`.
for _module in (cli_stack, cli_compare, cli_demo, cli_consumer, cli_spool, cli_replay, cli_identify, cli_sets,
                cli_serve):
    _module.register(app)
