"""The `cathodeml` command line: a thin typer app.

Each subcommand lives in `cathodeml/commands/<name>.py` as a plain function whose body reads
like a recipe (parse → load → compute → write → report).  This module only registers them and
turns user errors (`CathodemlError`) into one line on stderr and a non-zero exit code;
`--debug` re-raises them with the traceback.
"""

from __future__ import annotations

import functools
import sys

import typer

from cathodeml import __version__
from cathodeml.errors import CathodemlError

app = typer.Typer(
    name="cathodeml",
    help="Machine-learned potentials for battery cathodes: VASP → spin-aware DeepPot-SE → MD → Li-ion transport.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cathodeml {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    _state["debug"] = debug


def user_errors(func):
    """Run a subcommand, printing CathodemlError as `error: message` on stderr with exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CathodemlError as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if _state["debug"]:
                raise
            typer.echo("interrupted: outputs left as they were", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _register() -> None:
    # One line per subcommand; a subcommand is listed only once it really works.
    from cathodeml.commands import info

    app.command("info", help=info.__doc__)(user_errors(info.info))
    from cathodeml.commands import ingest

    app.command("ingest", help=ingest.__doc__)(user_errors(ingest.ingest))
    from cathodeml.commands import augment_spin

    app.command("augment-spin", help=augment_spin.__doc__)(user_errors(augment_spin.augment_spin))
    from cathodeml.commands import analyze

    app.command("analyze", help=analyze.__doc__)(user_errors(analyze.analyze))
    from cathodeml.commands import export, export_lammps, import_model

    app.command("export", help=export.__doc__)(user_errors(export.export))
    app.command("export-lammps", help=export_lammps.export_lammps.__doc__)(user_errors(export_lammps.export_lammps))
    app.command("import", help=import_model.__doc__)(user_errors(import_model.import_model))
    from cathodeml.commands import compress

    app.command("compress", help=compress.__doc__)(user_errors(compress.compress))
    from cathodeml.commands import test_model, train

    app.command("train", help=train.__doc__)(user_errors(train.train))
    app.command("test", help=test_model.__doc__)(user_errors(test_model.test_model))
    from cathodeml.commands import md

    app.command("md", help=md.__doc__)(user_errors(md.md))
    from cathodeml.commands import report

    app.command("report", help=report.__doc__)(user_errors(report.report))
    from cathodeml.commands import spin_scan

    app.command("spin-scan", help=spin_scan.__doc__)(user_errors(spin_scan.spin_scan))
    from cathodeml.commands import spin_search

    app.command("spin-search", help=spin_search.__doc__)(user_errors(spin_search.spin_search))
    from cathodeml.commands import select

    app.command("select", help=select.__doc__)(user_errors(select.select))


_register()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
