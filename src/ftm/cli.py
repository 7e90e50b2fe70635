"""The `ftm` command: global options, the commands, and the one place errors become exit codes.

Exit codes (docs/architecture.md): 0 ok, 1 error, 2 usage, 3 some batches or firms failed, 4 settings or
credentials, 5 a run stopped before the end, 130 interrupted. Human output goes to stderr, `--json`
output to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.exceptions import TyperException

from ftm import __version__
from ftm.commands import (
    CliContext,
    Command,
    Group,
    cancel,
    config,
    deploy,
    image,
    map_batch,
    measure,
    name,
    prefetch,
    reduce,
    report,
    run,
    stderr,
    submit,
    trends,
    watch,
)
from ftm.errors import FtmError

EXAMPLES = """\
Examples:

  # a quarter from a file: sentences, firm topics, themes, names, a page
  ftm prefetch 2016Q4 --source files --input transcripts.jsonl.gz
  ftm submit --quarter 2016Q4 --batch-size 50
  ftm reduce --quarter 2016Q4
  ftm name --quarter 2016Q4
  ftm report 2016Q4            # the themes as one HTML page, offline

  # or all of it, for a range of quarters, then the themes through time
  ftm run 2016Q3..2017Q2 --input transcripts.jsonl.gz

  # each command's options, with examples of its own
  ftm submit --help

Every stage goes on where it stopped when run again. Settings: ./ftm.toml, FTM_* variables and
flags (`ftm config` shows them). Exit codes: 0 ok, 1 error, 2 usage, 3 some batches, firms or
names failed, 4 settings or credentials, 5 a run stopped before the end, 130 interrupted.
"""

app = typer.Typer(
    name="ftm",
    cls=Group,
    help=(
        "Find the investment themes that many firms talk about at once, from every earnings "
        "call of a quarter, as a firm x theme panel keyed by PERMNO and GVKEY."
    ),
    epilog=EXAMPLES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks are for bugs, never for users' mistakes
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        print(f"ftm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="FTM_CONFIG",
            help="Settings file (TOML). Default: ./ftm.toml when it exists.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    ctx.obj = CliContext(config=config_file)


for command, function, epilog in (
    ("prefetch", prefetch.prefetch, prefetch.EXAMPLES),
    ("submit", submit.submit, submit.EXAMPLES),
    ("map-batch", map_batch.map_batch, map_batch.EXAMPLES),
    ("watch", watch.watch, watch.EXAMPLES),
    ("cancel", cancel.cancel, cancel.EXAMPLES),
    ("config", config.show_config, config.EXAMPLES),
    ("reduce", reduce.reduce, reduce.EXAMPLES),
    ("name", name.name, name.EXAMPLES),
    ("trends", trends.trends, trends.EXAMPLES),
    ("measure", measure.measure, measure.EXAMPLES),
    ("report", report.report, report.EXAMPLES),
    ("run", run.run, run.EXAMPLES),
    ("deploy", deploy.deploy, deploy.DEPLOY_EXAMPLES),
    ("doctor", deploy.doctor, deploy.DOCTOR_EXAMPLES),
    ("destroy", deploy.destroy, deploy.DESTROY_EXAMPLES),
):
    app.command(command, cls=Command, epilog=epilog)(function)
app.add_typer(image.app, name="image")


INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI and returns its exit code; every error ends here, as a message."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="ftm", standalone_mode=False)
    except TyperException as error:  # usage errors: an unknown option, a missing argument
        error.show()
        return error.exit_code
    except FtmError as error:
        stderr.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return error.exit_code
    except (typer.Abort, KeyboardInterrupt):
        result = INTERRUPTED
    code = result if isinstance(result, int) else 0
    if code == INTERRUPTED:  # Typer turns Ctrl-C into a silent exit 130; say what it means
        stderr.print("interrupted: everything written so far is kept; run the same command to go on")
    return code


if __name__ == "__main__":
    sys.exit(main())
