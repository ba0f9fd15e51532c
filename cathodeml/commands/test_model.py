"""Test a model on labelled data: energy and force errors per system, element and spin state, parity plots.

Energies in meV/atom and forces in meV/Å (RMSE and MAE). A spin model rebuilds the virtual atoms of plain data itself from its recorded settings. With -o DIR it writes test_results.json (every number) and parity_energy.png / parity_force.png; --json prints the same JSON to stdout. With --models (further members of an ensemble) it also writes the model deviation of every frame to DIR/model_devi.out (DeePMD-kit's columns, one block per system, steps = frame indices).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError
from cathodeml.io.results import strict_json_text


def test_model(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Trained model: model.h5, or a DeePMD-kit .dp (se_e2_a)."),
    data_path: Path = typer.Argument(..., metavar="DATA", help="Labelled dataset (.h5 or deepmd/npy folder)."),
    out_dir: Path = typer.Option(None, "-o", "--output", help="Folder for test_results.json and the parity plots."),
    ensemble: list[Path] = typer.Option(None, "--models", help="Further models of an ensemble with MODEL (repeat the option): adds each frame's model deviation (model_devi.out in -o)."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Energy/force RMSE and MAE of a model on labelled data, parity plots, JSON."""
    from cathodeml.io.dataset import read_dataset
    from cathodeml.model.store import load_model
    from cathodeml.train.evaluate import error_report, parity_data, predict_system, systems_for_model

    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise CathodemlError(f"{out_dir} exists and is not a folder; give a folder for the test outputs")
    model = load_model(model_path)
    members = [model] + [load_model(p) for p in ensemble or []]
    if len(members) > 1:
        from cathodeml.ensemble import check_compatible

        check_compatible(members, [str(model_path)] + [str(p) for p in ensemble])
    # a deepmd/npy system without type_map.raw: its type.raw indexes the model's type map (as in DeePMD-kit)
    systems = systems_for_model(model, read_dataset(data_path, model.config.type_map), str(data_path))

    err = Console(stderr=True)
    predictions = []
    with Progress(TextColumn("testing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, disable=quiet or as_json) as bar:
        task = bar.add_task("frames", total=len(members) * sum(s.n_frames for s in systems))
        deviations = []
        for s in systems:
            predictions.append(predict_system(model, s, want_virial=True if len(members) > 1 else None))
            bar.advance(task, s.n_frames)
            if len(members) > 1:
                others = [predict_system(m, s, want_virial=True) for m in members[1:]]
                bar.advance(task, s.n_frames * len(others))
                deviations.append(_deviation(s, [predictions[-1]] + others))
                if s.virials is None:
                    predictions[-1] = predictions[-1][:2] + (None,)

    report = {"model": str(model_path), "data": str(data_path), "spin": model.spin,
              **error_report(systems, predictions, model.config.type_map)}
    if deviations:
        report["model_deviation"] = {"models": [str(model_path)] + [str(p) for p in ensemble],
                                     "systems": {s.name: _deviation_summary(d) for s, d in zip(systems, deviations)}}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_outputs(out_dir, report, parity_data(systems, predictions))
        names = ("test_results.json", "parity_energy.png") + (("parity_force.png",) if report["overall"]["force"]["n"] else ())
        if deviations:
            from cathodeml.ensemble import format_rows, header
            from cathodeml.io.atomic import atomic_output

            with atomic_output(out_dir / "model_devi.out") as tmp:
                tmp.write_text("".join(header(s.name) + format_rows(d) for s, d in zip(systems, deviations)))
            names += ("model_devi.out",)
        report["files"] = [str(out_dir / n) for n in names]
    if as_json:
        typer.echo(strict_json_text(report))
    elif not quiet:
        _render(Console(), report)


def _deviation(system, predictions):
    """model_devi rows [F, 8] of one system from each member's (energies, forces, virials)."""
    import numpy as np

    from cathodeml.ensemble import model_deviation

    e, f, v = (np.stack([p[i] for p in predictions]) for i in range(3))
    return model_deviation(e, f, v, system.n_real)


def _deviation_summary(devi) -> dict:
    """Per system: frames, and the mean and largest of max_devi_f (eV/Å) and devi_e (eV/atom)."""
    return {"frames": int(devi.shape[0]), "max_devi_f_mean": float(devi[:, 4].mean()),
            "max_devi_f_max": float(devi[:, 4].max()), "devi_e_mean": float(devi[:, 7].mean()),
            "devi_e_max": float(devi[:, 7].max())}


def _write_outputs(folder: Path, report: dict, parity: dict) -> None:
    from cathodeml.io.atomic import atomic_output

    with atomic_output(folder / "test_results.json") as tmp:
        tmp.write_text(strict_json_text(report))
    _parity_plot(folder / "parity_energy.png", parity, "energy", "energy (eV/atom)")
    if any(d["force_dft"].size for d in parity.values()):  # energy-only data has no force parity
        _parity_plot(folder / "parity_force.png", parity, "force", "force component (eV/Å)")


def _parity_plot(path: Path, parity: dict, key: str, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from cathodeml.io.atomic import atomic_output

    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=150)
    lo, hi = np.inf, -np.inf
    for name, d in parity.items():
        x, y = d[f"{key}_dft"], d[f"{key}_model"]
        if not x.size:
            continue
        ax.scatter(x, y, s=6, alpha=0.6, label=name)
        lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.8)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(f"DFT {label}")
    ax.set_ylabel(f"model {label}")
    if len(parity) <= 8:
        ax.legend(fontsize=6, markerscale=2)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _render(console: Console, report: dict) -> None:
    o = report["overall"]
    forces = (f"force RMSE {o['force']['rmse']:.1f} meV/Å (MAE {o['force']['mae']:.1f})" if o["force"]["n"]
              else "no force labels (energy-only data)")
    console.print(f"{report['model']} on {report['data']}: {o['frames']} frames; energy RMSE "
                  f"{o['energy']['rmse']:.2f} meV/atom (MAE {o['energy']['mae']:.2f}), {forces}"
                  + (f", virial RMSE {report['virial']['rmse']:.2f} meV/atom" if "virial" in report else ""),
                  highlight=False)
    table = Table("system", "frames", "atoms", "E RMSE meV/atom", "E MAE", "F RMSE meV/Å", "F MAE", title="per system")
    for s in report["systems"]:
        table.add_row(s["name"], str(s["frames"]), str(s["atoms"]), f"{s['energy']['rmse']:.2f}",
                      f"{s['energy']['mae']:.2f}", f"{s['force']['rmse']:.1f}", f"{s['force']['mae']:.1f}")
    console.print(table)
    table = Table("element / spin state", "F RMSE meV/Å", "F MAE", "components", title="forces per element and spin state")
    for name, e in {**report["elements"], **report["spin_states"]}.items():
        table.add_row(name, f"{e['force']['rmse']:.1f}", f"{e['force']['mae']:.1f}", str(e["force"]["n"]))
    console.print(table)
    if report["spin_configurations"]:
        table = Table("spin configuration (atoms × μB)", "frames", "E RMSE meV/atom", "E MAE", title="energies per spin configuration")
        for name, e in report["spin_configurations"].items():
            table.add_row(name, str(e["energy"]["n"]), f"{e['energy']['rmse']:.2f}", f"{e['energy']['mae']:.2f}")
        console.print(table)
    if "model_deviation" in report:
        table = Table("system", "frames", "max_devi_f mean eV/Å", "max_devi_f max", "devi_e mean meV/atom",
                      title=f"model deviation of {len(report['model_deviation']['models'])} models")
        for name, d in report["model_deviation"]["systems"].items():
            table.add_row(name, str(d["frames"]), f"{d['max_devi_f_mean']:.4f}", f"{d['max_devi_f_max']:.4f}",
                          f"{1000 * d['devi_e_mean']:.2f}")
        console.print(table)
    for f in report.get("files", []):
        console.print(f"wrote {f}", highlight=False)
