"""Command-line options that every subcommand spells the same way, declared once.

typer reads an option's flags and help from the parameter's `Annotated` metadata, so a command
writes `quiet: Quiet = False` and gets exactly the flags and help of every other command: a user
who learnt `-q` on one subcommand can rely on it on all of them, and a change of wording is made
here and nowhere else.  Options whose meaning differs between commands (the -o/--output path is a
file for some, a folder for others, required or defaulted) stay declared in their command.
"""

from __future__ import annotations

from typing import Annotated

import typer

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, tables or summary on success; "
                                                          "errors still go to stderr.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout instead of the tables.")]
