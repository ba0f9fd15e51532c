"""Write a one-page markdown summary (RMSEs, D, σ, Haven ratio, Eₐ, linked figures) from the JSON
outputs of `cathodeml test` and `cathodeml analyze`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError
from cathodeml.io.atomic import atomic_output
from cathodeml.report import load_analysis_run, load_test_run, summary_markdown


def report(
    output: Path = typer.Option(Path("results/summary.md"), "-o", "--output", help="Markdown page to write."),
    tests: list[str] = typer.Option(None, "--test", help="`cathodeml test -o` folder (or its test_results.json), "
                                                         "optionally LABEL=PATH; repeat to compare models side by side."),
    analysis: Path = typer.Option(None, "--analysis", help="`cathodeml analyze -o` folder (or its results.json)."),
    title: str = typer.Option("cathodeml results", "--title", help="Page title."),
    notes: list[str] = typer.Option(None, "--note", help="A remark shown under the title (repeatable)."),
    files: list[Path] = typer.Option(None, "--file", help="A file of the chain to link under 'Files' (repeatable)."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Summarise test and analyze results in one markdown page that links their figures."""
    test_runs = [load_test_run(spec) for spec in tests or []]
    analysis_run = None if analysis is None else load_analysis_run(analysis)
    missing = [p for p in files or [] if not p.exists()]
    if missing:
        raise CathodemlError(f"--file {missing[0]}: no such file")
    output.parent.mkdir(parents=True, exist_ok=True)
    text = summary_markdown(output, title=title, tests=test_runs, analysis=analysis_run, notes=list(notes or []),
                            files=list(files or []))
    with atomic_output(output) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    if as_json:
        typer.echo(json.dumps({"output": str(output), "tests": [t.label for t in test_runs],
                               "md_runs": 0 if analysis_run is None else len(analysis_run.results["runs"])}))
    elif not quiet:
        Console().print(f"wrote {output} ({len(test_runs)} test result(s), "
                        f"{0 if analysis_run is None else len(analysis_run.results['runs'])} MD run(s))")
