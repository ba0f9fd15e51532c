"""Train a DeepPot-SE (se_e2_a) model, with or without virtual spin atoms.

The config is a TOML file (presets in configs/) or a DeePMD-kit input.json; command-line options override it. Data: every system of every --data file (cathodeml/deepmd-hdf5 .h5 or deepmd/npy folders); a validation split is held out unless --valid is given. Writes the model, lcurve.out (DeePMD-kit's columns) and checkpoint.h5 next to it; Ctrl-C or SIGTERM saves a checkpoint and stops, and --restart continues the run exactly. Several hosts: launch one task per host (`srun`, `mpirun`) with --distributed; all processes read the same files, and process 0 alone writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError


def train(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="Training config: .toml (see configs/) or DeePMD-kit input.json."),
    data: list[Path] = typer.Option(None, "--data", "-d", help="Training dataset(s); repeat the option for several files."),
    valid: list[Path] = typer.Option(None, "--valid", help="Validation dataset(s); default: hold out training.validation_fraction."),
    output: Path = typer.Option(..., "-o", "--output", help="Model file to write (model.h5)."),
    steps: int = typer.Option(None, "--steps", help="Number of training steps (overrides training.steps)."),
    batch_size: str = typer.Option(None, "--batch-size", help="Frames per step: an int or auto[:n] (overrides training.batch_size)."),
    seed: int = typer.Option(None, "--seed", help="Data shuffling seed (overrides training.seed)."),
    restart: Path = typer.Option(None, "--restart", help="Continue from this checkpoint.h5 exactly where it stopped (with --ensemble: the base name; finished members are kept)."),
    ensemble: int = typer.Option(1, "--ensemble", min=1, help="Train K models that differ only in their initialisation (model.seed, seed+1, …) on the same batches, in one vmapped program: OUTPUT's stem gets .000, .001, … (as DP-GEN's graph.000.pb), with their own lcurve and checkpoint."),
    sequential: bool = typer.Option(False, "--sequential", help="With --ensemble: train the members one after another (1/K of the memory) instead of in one program."),
    stream: bool = typer.Option(None, "--stream/--resident", help="Read training batches from the HDF5 files while training (datasets larger than memory; training.stream) or hold every frame on the device (default)."),
    quiet: Quiet = False,
    as_json: AsJson = False,
    distributed: bool = typer.Option(False, "--distributed", help="Train across hosts: one task per host (srun / mpirun); jax.distributed finds the others from SLURM, Open MPI or JAX_COORDINATOR_ADDRESS."),
) -> None:
    """Train a DeepPot-SE model (jitted JAX, Adam, DeePMD-kit schedule); virtual spin atoms supported."""
    import jax

    from cathodeml.train.config import read_config, with_overrides
    from cathodeml.train.distributed import launched_tasks, start_distributed

    if distributed:
        rank, n_processes = start_distributed()
    elif launched_tasks() > 1:
        raise CathodemlError(f"{launched_tasks()} tasks were launched (srun/mpirun) without --distributed: each would "
                             "train alone and overwrite the others' files; add --distributed or launch one task")
    else:
        rank, n_processes = 0, 1
    if rank != 0:  # process 0 alone prints and writes
        quiet, as_json = True, False

    settings, ignored = read_config(config_path)
    settings = with_overrides(
        settings, training__steps=steps, training__seed=seed, training__stream=stream,
        training__batch_size=None if batch_size is None else (int(batch_size) if batch_size.isdigit() else batch_size),
        training__data=tuple(str(p) for p in data) if data else None,
        training__valid_data=tuple(str(p) for p in valid) if valid else None,
    )
    if output.is_dir():
        raise CathodemlError(f"{output} is a directory; give a file name for the model, e.g. model.h5")
    err = Console(stderr=True)
    for key in ignored if rank == 0 else ():
        err.print(f"[yellow]note:[/yellow] {config_path}: {key} is not used by cathodeml", highlight=False)
    lcurve = _beside(output.parent, settings.training.lcurve)
    checkpoint = _beside(output.parent, settings.training.checkpoint)
    if ensemble == 1:
        plan = _plan(settings, restart, quiet or as_json)
        _train(plan, [(settings, output, lcurve, checkpoint)], rank, n_processes, quiet, as_json)
        return
    tag = lambda p, k: p.with_name(f"{p.stem}.{k:03d}{p.suffix}")  # noqa: E731
    kept = [k for k in range(ensemble) if restart is not None and tag(output, k).exists()]  # finished members
    todo = [k for k in range(ensemble) if k not in kept]
    runs = {k: (with_overrides(settings, model__seed=settings.model.seed + k), tag(output, k), tag(lcurve, k),
                tag(checkpoint, k)) for k in todo}
    resume = {k: tag(restart, k) if restart is not None and tag(restart, k).exists() else None for k in todo}
    summaries = {k: {"model": str(tag(output, k)), "member": k, "kept": True} for k in kept}
    if todo and not sequential and jax.device_count() == 1 and len({r is None for r in resume.values()}) == 1:
        # one vmapped program: every member on the same batches, one compiled step
        if not (quiet or as_json):
            err.print(f"ensemble of {len(todo)} in one program: model.seed "
                      f"{', '.join(str(runs[k][0].model.seed) for k in todo)}", highlight=False)
        plan = _plan(runs[todo[0]][0], resume[todo[0]], quiet or as_json)
        states = [plan.state] + [_member_state(plan, runs[k][0], resume[k]) for k in todo[1:]]
        done = _train(plan, [runs[k] for k in todo], rank, n_processes, quiet or as_json, False, states=states,
                      report=False, restart_hint=checkpoint)
        summaries |= {k: {**d, "member": k} for k, d in zip(todo, done)}
    for k in [k for k in todo if k not in summaries]:  # one by one (asked, several devices, or mixed restarts)
        if not (quiet or as_json):
            err.print(f"ensemble member {k + 1}/{ensemble}: model.seed {runs[k][0].model.seed} → {runs[k][1]}",
                      highlight=False)
        plan = _plan(runs[k][0], resume[k], quiet or as_json)
        summaries[k] = {**_train(plan, [runs[k]], rank, n_processes, quiet or as_json, False, report=False,
                                 restart_hint=checkpoint)[0], "member": k}
    if rank == 0:
        members = [summaries[k] for k in range(ensemble)]
        result = {"ensemble": ensemble, "models": [m["model"] for m in members], "members": members}
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        elif not quiet:
            table = Table("member", "model", "steps", "E RMSE meV/atom (valid)", "F RMSE meV/Å (valid)", title="ensemble")
            for m in members:
                v = m.get("final_valid") or m.get("last_train") or {}
                table.add_row(str(m["member"]), m["model"], "kept" if m.get("kept") else str(m["steps"]),
                              f"{1000 * v['rmse_e']:.2f}" if "rmse_e" in v else "-",
                              f"{1000 * v['rmse_f']:.1f}" if "rmse_f" in v else "-")
            Console().print(table)


def _plan(settings, restart: Path | None, quiet: bool):
    """Read the data and build the neighbour lists of a run (`train.plan.plan_run`), with a spinner."""
    from cathodeml.train.plan import plan_run

    err = Console(stderr=True)
    with err.status("reading data, building neighbour lists, computing statistics", spinner="dots") if not quiet else _null():
        return plan_run(settings, str(restart) if restart else None)


def _member_state(plan, settings, restart: Path | None):
    """Another ensemble member's starting state on `plan`'s data: fresh weights from its model.seed (the
    statistics are the data's, shared), or its own checkpoint, which must fit the plan's model and data."""
    import jax

    from cathodeml.model.potential import init_params
    from cathodeml.train.trainer import data_fingerprint, new_run_state, read_checkpoint

    if restart is None:
        return new_run_state(init_params(plan.config, jax.random.PRNGKey(settings.model.seed)), plan.state.stats)
    config, meta, state = read_checkpoint(restart)
    if config != plan.config or meta.get("fingerprint") != data_fingerprint(plan.train_systems):
        raise CathodemlError(f"{restart} was written for another model or other training data than the other members'")
    return state


def _shortest_pair(systems) -> float:
    """Shortest pair distance (Å) of the training frames, virtual atoms included: `compress` sets its table range
    from it, as DeePMD-kit's compression does from the training data."""
    from cathodeml.model.compress import min_neighbor_distance

    try:
        return min_neighbor_distance((s.all_coords(), None if s.nopbc else s.cells, s.all_types()) for s in systems)
    except CathodemlError:  # isolated atoms only: nothing to tabulate against; `compress` will ask for it
        return None


def _train(plan, runs: list, rank: int, n_processes: int, quiet: bool, as_json: bool, states: list | None = None,
           report: bool = True, restart_hint: Path | None = None) -> list[dict]:
    """Train the members `runs` [(settings, model file, lcurve, checkpoint)] on `plan` (from `states`,
    default the plan's own) in one program; write their models; return their summaries.
    restart_hint: the checkpoint to name in the "continue with --restart" line (an ensemble's base name)."""
    from cathodeml.model import Model, save_model
    from cathodeml.signals import stop_on_signals
    from cathodeml.train.trainer import Member, train_members

    err = Console(stderr=True)
    states = states or [plan.state]
    columns = [TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[errors]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    steps = plan.settings.training.steps
    with Progress(*columns, console=err, disable=quiet or as_json) as bar, stop_on_signals() as should_stop:
        task = bar.add_task("train", total=steps, completed=states[0].step, errors="")

        def progress(step, total, info):
            bar.update(task, completed=step, errors=_errors_text(info))

        results = train_members(plan.config, [Member(st, r[0], r[2], r[3]) for st, r in zip(states, runs)],
                                plan.train_systems, plan.valid_systems, progress=progress, should_stop=should_stop,
                                extra_checkpoint={"spin": plan.spin})
    summaries = []
    # streamed runs: over the frames read for statistics (the shortest pair of all frames would need a pass over them)
    min_nbor_dist = (_shortest_pair(plan.sample_systems or plan.train_systems)
                     if rank == 0 and not results[0].interrupted else None)
    for (settings, output, lcurve, checkpoint), result in zip(runs, results):
        summary = {**_summary(plan, result, output, lcurve, checkpoint), "processes": n_processes}
        if result.interrupted:
            summary["model"] = None
        elif rank == 0:
            metadata = {"training": settings.to_dict(), "data": plan.data_paths, "valid_data": plan.valid_paths,
                        "steps": result.step, "final": result.final, "min_nbor_dist": min_nbor_dist}
            save_model(output, Model(plan.config, result.params, result.stats, spin=plan.spin, metadata=metadata))
        if report and rank == 0:
            _report(summary, quiet, as_json)
        summaries.append(summary)
    if results[0].interrupted:
        if rank == 0:
            err.print(f"interrupted at step {results[0].step}: checkpoint written to {runs[0][3]}"
                      + (f" (and the other members')" if len(runs) > 1 else "")
                      + f"; continue with --restart {restart_hint or runs[0][3]}", highlight=False)
        raise typer.Exit(130)
    return summaries


def _beside(folder: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else folder / p


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _errors_text(info: dict) -> str:
    if not info:
        return ""
    src = info.get("valid") or info.get("train")
    return f"E {1000 * src['rmse_e']:.1f} meV/atom  F {1000 * src['rmse_f']:.0f} meV/Å"


def _summary(plan, result, output: Path, lcurve: Path, checkpoint: Path) -> dict:
    last = result.history[-1] if result.history else {}
    return {
        "model": str(output), "lcurve": str(lcurve), "checkpoint": str(checkpoint),
        "restarted_from": plan.restarted_from, "steps": result.step, "interrupted": result.interrupted,
        "seconds": result.seconds, "steps_per_second": result.steps_per_second,
        "type_map": list(plan.config.type_map), "sel": list(plan.config.sel), "spin": plan.spin,
        "train_systems": [{"name": s.name, "frames": s.n_frames, "atoms": s.n_real, "batch_size": s.batch_size}
                          for s in plan.train_systems],
        "valid_frames": sum(s.n_frames for s in plan.valid_systems),
        "last_train": last.get("train"), "final_valid": result.final.get("valid"),
    }


def _report(summary: dict, quiet: bool, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    if quiet:
        return
    console = Console()
    table = Table(title=f"training summary ({summary['steps']} steps, {summary['steps_per_second']:.1f} steps/s)")
    table.add_column("quantity")
    table.add_column("train (last batch)", justify="right")
    table.add_column("validation", justify="right")
    trn, val = summary["last_train"] or {}, summary["final_valid"] or {}
    for key, label, unit in (("rmse_e", "energy RMSE", "meV/atom"), ("rmse_f", "force RMSE", "meV/Å"),
                             ("rmse_v", "virial RMSE", "meV/atom")):
        if key in trn or key in val:
            fmt = lambda d: f"{1000 * d[key]:.2f} {unit}" if key in d else "-"  # noqa: E731
            table.add_row(label, fmt(trn), fmt(val))
    console.print(table)
    console.print(f"type map {','.join(summary['type_map'])}, sel {summary['sel']}"
                  + (f", spin {summary['spin']['mode']} on {','.join(summary['spin']['elements'])}" if summary["spin"] else ""),
                  highlight=False)
    wrote = [summary["model"]] if summary["model"] else []
    console.print("wrote " + ", ".join(wrote + [summary["lcurve"], summary["checkpoint"]]), highlight=False)


def describe_checkpoint(path):
    """Summary of a training checkpoint for `cathodeml info`: step reached, run length, model."""
    from cathodeml.train.trainer import read_checkpoint

    config, meta, state = read_checkpoint(path)
    training = meta["settings"]["training"]
    summary = {"path": str(path), "kind": "checkpoint", "step": state.step, "steps": training["steps"],
               "type_map": list(config.type_map), "sel": list(config.sel), "model": config.to_dict(),
               "spin": meta.get("spin"), "data": training["data"]}

    def render(console):
        console.print(f"[bold]{path}[/bold]: training checkpoint at step {state.step} of {training['steps']}; "
                      f"type map {','.join(config.type_map)}, sel {list(config.sel)}, embedding "
                      f"{list(config.embedding_neurons)}, fitting {list(config.fitting_neurons)}"
                      + (f", spin {meta['spin']['mode']}" if meta.get("spin") else ""), highlight=False)
        console.print(f"continue with: cathodeml train CONFIG --restart {path} -o model.h5", highlight=False)

    return summary, render
