"""One trajectory → transport and structure results, in a single streaming pass over its frames.

The pass keeps in memory only what the physics needs at full resolution — the unwrapped
positions of the mobile ions (6,000 Li × 5,000 frames is 0.7 GB of float64) — and reduces the
rest on the fly: the framework's centre of mass per frame (to remove its drift), the cell
volume, and pair-distance histograms on an evenly spaced subset of frames.  After the pass the
MSDs come from the FFT algorithm (whole run and each block), D from least-squares lines, and
the Haven ratio and conductivities from those.  This module wires the pure functions of
msd/transport/rdf together; it reads frames through a `Trajectory` but opens no files itself
and reports progress through a callback, so the command decides how to show it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

import numpy as np

from cathodeml import geometry, units
from cathodeml.analysis import msd as msd_mod
from cathodeml.analysis import transport
from cathodeml.analysis.rdf import RdfAccumulator, first_shell
from cathodeml.analysis.transport import Estimate
from cathodeml.errors import CathodemlError

D_UNIT = "cm^2/s"
SIGMA_UNIT = "mS/cm"


@dataclasses.dataclass(frozen=True)
class FitWindow:
    """A fit window as the user wrote it: each end in fs, or a fraction of the run length T;
    start None means automatic (where the MSD turns linear, ≥ 1 ps)."""

    start_fs: float | None = None
    start_fraction: float | None = None
    end_fs: float | None = None
    end_fraction: float | None = 0.5
    text: str = "auto"

    def end_for(self, duration_fs: float) -> float:
        """The window's end in fs for a run lasting `duration_fs`."""
        return self.end_fs if self.end_fs is not None else self.end_fraction * duration_fs

    def resolve(self, duration_fs: float, auto_start: Callable[[], float]) -> tuple[float, float]:
        """(start, end) in fs for a run lasting `duration_fs`."""
        end = self.end_for(duration_fs)
        if self.start_fs is not None:
            start = self.start_fs
        elif self.start_fraction is not None:
            start = self.start_fraction * duration_fs
        else:
            start = auto_start()
        if end > duration_fs + 1e-6:
            raise CathodemlError(f"fit window {self.text} ends at {end / 1000:g} ps but the run lasts only "
                                 f"{duration_fs / 1000:g} ps: shorten --fit-window")
        if start >= end:
            raise CathodemlError(f"fit window {self.text} is empty for a run of {duration_fs / 1000:g} ps "
                                 f"(start {start / 1000:g} ps ≥ end {end / 1000:g} ps): use a longer run or set --fit-window")
        return float(start), float(end)


_TIME = re.compile(r"^\s*([0-9.eE+-]+)\s*(fs|ps|ns)\s*$")
_FRACTION = re.compile(r"^\s*(?:([0-9.eE+-]+)\s*\*?\s*)?T\s*(?:/\s*([0-9.eE+-]+))?\s*$")


def parse_fit_window(text: str | None) -> FitWindow:
    """Parse "auto", "START:END" with each end "2ps", "500fs", "T/2", "0.25T" or (start) "auto"."""
    if text is None or text.strip().lower() in ("", "auto"):
        return FitWindow()
    parts = text.split(":")
    if len(parts) != 2:
        raise CathodemlError(f"--fit-window {text!r}: write START:END, e.g. 2ps:T/2, 1ps:20ps or auto:T/2")
    ends = []
    for part in parts:
        if part.strip().lower() == "auto" and not ends:
            ends.append((None, None))
            continue
        m = _TIME.match(part)
        if m:
            ends.append((_matched_fs(m), None))
            continue
        m = _FRACTION.match(part)
        if m:
            ends.append((None, float(m.group(1) or 1.0) / float(m.group(2) or 1.0)))
            continue
        raise CathodemlError(f"--fit-window {text!r}: cannot read {part!r}; use a time with unit (2ps, 500fs) or a "
                             "fraction of the run (T/2, 0.25T)")
    (s_fs, s_frac), (e_fs, e_frac) = ends
    return FitWindow(start_fs=s_fs, start_fraction=s_frac, end_fs=e_fs, end_fraction=e_frac, text=text)


@dataclasses.dataclass(frozen=True)
class AnalysisSettings:
    """What to compute. species: the mobile ion (element name); charge Z (e); blocks: number of
    time blocks for the error bars; rdf_pairs [(a, b)]; rdf_rmax Å (None: min(10 Å, half the
    cell width)); rdf_frames: at most this many evenly spaced frames go into the RDF; skip_fs:
    the equilibration time at the start of each trajectory that is left out of everything."""

    species: str = "Li"
    charge: float = 1.0
    fit_window: FitWindow = FitWindow()
    blocks: int = 5
    remove_drift: bool = True
    rdf_pairs: tuple[tuple[str, str], ...] = ()
    rdf_rmax: float | None = None
    rdf_bins: int = 200
    rdf_frames: int = 100
    skip_fs: float = 0.0
    chunk_bytes: int = 128 * 1024**2


@dataclasses.dataclass
class RunAnalysis:
    """Everything learned from one trajectory. Arrays: time_fs [T] lag times fs; msd_self,
    msd_total [T, 3] Å² per axis (per ion); Estimates in the units they name."""

    path: str
    temperature_K: float
    timestep_fs: float
    n_frames: int
    n_ions: int
    n_atoms: int
    volume_A3: float
    time_fs: np.ndarray
    msd_self: np.ndarray
    msd_total: np.ndarray
    window_fs: tuple[float, float]
    D_self: Estimate
    D_self_axes: list[Estimate]
    D_sigma: Estimate
    haven_ratio: Estimate
    sigma: Estimate
    sigma_tracer: Estimate
    block_D_self: np.ndarray
    block_D_sigma: np.ndarray
    rdf: dict
    rdf_shells: dict
    settings: AnalysisSettings

    @property
    def msd_distinct(self) -> np.ndarray:
        """MSD_total − MSD_self [T, 3] Å²: negative where ions move anti-correlated."""
        return self.msd_total - self.msd_self


def _first_kept_frame(time_fs: np.ndarray, skip_fs: float, path) -> int:
    """Index of the first frame at or after `skip_fs` (the discarded equilibration)."""
    if skip_fs < 0:
        raise CathodemlError("--skip must be a non-negative time, e.g. 5ps")
    if skip_fs == 0:
        return 0
    first = int(np.searchsorted(time_fs, time_fs[0] + skip_fs - 1e-6 * max(skip_fs, 1.0)))
    if first >= len(time_fs):
        raise CathodemlError(f"{path}: --skip {skip_fs / units.FS_PER_PS:g} ps removes the whole run "
                             f"({time_fs[-1] / units.FS_PER_PS:g} ps)")
    return first


def _matched_fs(m: re.Match) -> float:
    """The time of a `_TIME` match in fs."""
    return float(m.group(1)) * {"fs": 1.0, "ps": units.FS_PER_PS, "ns": 1000.0 * units.FS_PER_PS}[m.group(2)]


def parse_time(text: str, what: str) -> float:
    """A time with its unit ("5ps", "500fs", "1ns", bare numbers are fs) in fs."""
    m = _TIME.match(text)
    if m:
        return _matched_fs(m)
    try:
        return float(text)
    except ValueError:
        raise CathodemlError(f"{what} {text!r}: give a time with its unit, e.g. 5ps or 500fs") from None


def _time_axis(header, timestep_fs: float | None) -> tuple[np.ndarray, float]:
    n = header.n_frames
    if header.time_fs is not None and n > 1:
        t = np.asarray(header.time_fs, dtype=float)
        dt = float(np.median(np.diff(t)))
        if dt <= 0 or np.max(np.abs(np.diff(t) - dt)) > 1e-3 * dt:
            raise CathodemlError(f"{header.path}: frames are not evenly spaced in time; the MSD needs a constant stride")
        if timestep_fs is not None and not math.isclose(timestep_fs, dt, rel_tol=1e-3):
            raise CathodemlError(f"{header.path} stores frames every {dt:g} fs but --timestep says {timestep_fs:g} fs: "
                                 "drop --timestep for this file")
        return np.arange(n) * dt, dt
    if timestep_fs is None:
        raise CathodemlError(f"{header.path} has no times: give --timestep FS (time between stored frames)")
    if timestep_fs <= 0:
        raise CathodemlError("--timestep must be positive (fs between stored frames)")
    return np.arange(n) * float(timestep_fs), float(timestep_fs)


def _temperature(header, temperature_k: float | None) -> float:
    t_file = header.temperature_K
    if t_file is not None and temperature_k is not None and abs(t_file - temperature_k) > 0.5:
        raise CathodemlError(f"{header.path} was run at {t_file:g} K but --temperature says {temperature_k:g} K: "
                             "the temperatures do not match; drop --temperature for this file or fix it")
    t = temperature_k if temperature_k is not None else t_file
    if t is None:
        raise CathodemlError(f"{header.path} does not say its temperature: give --temperature K")
    if t <= 0:
        raise CathodemlError(f"temperature must be positive, got {t:g} K")
    return float(t)


def analyze_trajectory(trajectory, settings: AnalysisSettings, *, temperature_k: float | None = None,
                       timestep_fs: float | None = None,
                       progress: Callable[[int, int], None] | None = None) -> RunAnalysis:
    """Transport (and optionally RDF) analysis of one open `Trajectory`.

    temperature_k (K) and timestep_fs (fs between stored frames) are needed when the file does
    not carry them and must agree with it when it does.  `progress(done, total)` reports the
    work in frame units: reading is the first n_frames, the MSD computation the second.
    """
    header = trajectory.header
    symbols = np.asarray(header.symbols)
    mobile = np.flatnonzero(symbols == settings.species)
    if len(mobile) == 0:
        raise CathodemlError(f"species {settings.species!r} is absent from {header.path} "
                             f"(it has {', '.join(sorted(set(header.symbols)))}): change --species")
    framework = np.flatnonzero(symbols != settings.species)
    time_fs, dt = _time_axis(header, timestep_fs)
    temperature = _temperature(header, temperature_k)
    first = _first_kept_frame(time_fs, settings.skip_fs, header.path)
    n_frames = header.n_frames - first
    time_fs = time_fs[:n_frames]  # lag times start at 0 from the first kept frame
    if n_frames < 2 * transport.MIN_FIT_POINTS:
        raise CathodemlError(f"{header.path} has only {n_frames} frames{' after --skip' if first else ''}: "
                             "too few for an MSD fit")
    if settings.blocks < 1:
        raise CathodemlError("--blocks must be at least 1")

    positions = np.empty((n_frames, len(mobile), 3))
    com = np.zeros((n_frames, 3))
    volumes = np.empty(n_frames)
    masses = header.masses[framework]
    rdf_frames = set(np.unique(np.linspace(0, n_frames - 1, min(n_frames, settings.rdf_frames)).round().astype(int)).tolist())
    rdf = None
    prev_frac = prev_unwrapped = None
    done = 0
    for chunk in trajectory.chunks(frames=slice(first, None), chunk_bytes=settings.chunk_bytes):
        p, cells = chunk.positions, chunk.cells
        lo, hi = chunk.start, chunk.start + len(chunk)
        if chunk.images is not None:
            unwrapped = msd_mod.unwrap_with_images(p, chunk.images, cells)
        elif header.positions_unwrapped:
            unwrapped = p
        else:
            frac = geometry.fractional(p, cells)
            steps = msd_mod.minimum_image_steps(frac, prev_frac)
            cart = geometry.cartesian(steps, cells if prev_frac is not None else cells[1:])
            start = prev_unwrapped if prev_unwrapped is not None else p[0]
            unwrapped = start[None] + np.cumsum(cart, axis=0)
            if prev_unwrapped is None:
                unwrapped = np.concatenate([p[:1], unwrapped], axis=0)
            prev_frac, prev_unwrapped = frac[-1], unwrapped[-1]
        positions[lo:hi] = unwrapped[:, mobile]
        if len(framework):
            com[lo:hi] = msd_mod.framework_drift(unwrapped[:, framework], masses)
        volumes[lo:hi] = geometry.cell_volume(cells)
        if settings.rdf_pairs:
            for k in range(len(chunk)):
                if lo + k in rdf_frames:
                    if rdf is None:
                        r_max = settings.rdf_rmax or min(10.0, 0.5 * geometry.perpendicular_widths(cells[k]).min() - 1e-6)
                        rdf = RdfAccumulator(symbols, list(settings.rdf_pairs), r_max, settings.rdf_bins)
                    rdf.add_frame(p[k], cells[k])
        done = hi
        if progress is not None:
            progress(done, 2 * n_frames)
    if done != n_frames:
        raise CathodemlError(f"{header.path}: expected {n_frames} frames, read {done}; the file changed or is truncated")
    del prev_frac, prev_unwrapped
    if settings.remove_drift and len(framework):
        positions -= (com - com[0])[:, None, :]

    duration = float(time_fs[-1])
    max_lag = int(np.searchsorted(time_fs, settings.fit_window.end_for(duration), side="right"))
    report = None if progress is None else (lambda k, n: progress(n_frames + int(0.7 * n_frames * k / n), 2 * n_frames))
    msd_self, particle_msd = msd_mod.self_msd_and_particle_msd(positions, max_lag, on_block=report)
    msd_total = msd_mod.msd_fft(positions.sum(axis=1, keepdims=True)) / len(mobile)
    window = settings.fit_window.resolve(
        duration, lambda: transport.auto_fit_window(time_fs, msd_self.sum(axis=1))[0])
    d_self = transport.diffusion_coefficient(time_fs, msd_self.sum(axis=1), window)
    d_axes = [transport.diffusion_coefficient(time_fs, msd_self[:, a], window, dim=1) for a in range(3)]
    d_sigma = transport.diffusion_coefficient(time_fs, msd_total.sum(axis=1), window)

    block_self, block_sigma, block_axes = _block_estimates(positions, dt, window, settings.blocks)
    slopes = msd_mod.particle_slopes(particle_msd, time_fs, window)  # [N, 3] Å²/fs
    del particle_msd
    ion_err_self, ion_rel = transport.ion_scatter_errors(slopes.sum(axis=1) / 6.0)
    ion_err_axes = [transport.ion_scatter_errors(slopes[:, a] / 2.0)[0] for a in range(3)]
    err = transport.larger_error
    to_cm2 = transport.to_cm2_per_s
    est_self = Estimate(to_cm2(d_self), to_cm2(err(transport.block_error(block_self), ion_err_self)), D_UNIT)
    est_axes = [Estimate(to_cm2(d_axes[a]), to_cm2(err(transport.block_error(block_axes[:, a]), ion_err_axes[a])), D_UNIT)
                for a in range(3)]
    est_sigma = Estimate(to_cm2(d_sigma), to_cm2(err(transport.block_error(block_sigma), max(abs(d_sigma), d_self) * ion_rel)), D_UNIT)
    haven = transport.haven_ratio(est_self, est_sigma)
    volume = float(volumes.mean())
    sig = transport.nernst_einstein_conductivity(d_sigma, len(mobile), volume, temperature, settings.charge)
    sig_tr = transport.nernst_einstein_conductivity(d_self, len(mobile), volume, temperature, settings.charge)
    est_sig = Estimate(sig, abs(sig) * est_sigma.err / abs(est_sigma.value), SIGMA_UNIT)
    est_sig_tr = Estimate(sig_tr, abs(sig_tr) * est_self.err / abs(est_self.value), SIGMA_UNIT)

    if progress is not None:
        progress(2 * n_frames, 2 * n_frames)
    rdf_out, shells = {}, {}
    if rdf is not None:
        rdf_out = rdf.result()
        shells = {pair: first_shell(v["r"], v["g"], v["cn"]) for pair, v in rdf_out.items()}
    return RunAnalysis(path=str(header.path), temperature_K=temperature, timestep_fs=dt, n_frames=n_frames,
                       n_ions=len(mobile), n_atoms=header.n_atoms, volume_A3=volume, time_fs=time_fs,
                       msd_self=msd_self, msd_total=msd_total, window_fs=window, D_self=est_self, D_self_axes=est_axes,
                       D_sigma=est_sigma, haven_ratio=haven, sigma=est_sig, sigma_tracer=est_sig_tr,
                       block_D_self=to_cm2(block_self), block_D_sigma=to_cm2(block_sigma), rdf=rdf_out,
                       rdf_shells=shells, settings=settings)


def _block_estimates(positions: np.ndarray, dt: float, window, n_blocks: int):
    """D_self, D_σ (Å²/fs) and per-axis D_self [n_blocks, 3] from each contiguous time block."""
    if n_blocks < 2:
        return np.array([]), np.array([]), np.zeros((0, 3))
    n = positions.shape[0] // n_blocks
    t = np.arange(n) * dt
    win = transport.block_window(window, t[-1] if n else 0.0)
    if n < 2 * transport.MIN_FIT_POINTS or win[0] >= win[1]:
        raise CathodemlError(f"{n_blocks} blocks of {n} frames ({n * dt / 1000:g} ps) are too short for the fit window "
                             f"(at least {2 * transport.MIN_FIT_POINTS} frames each): use fewer --blocks")
    d_self, d_sigma, d_axes = [], [], []
    for b in range(n_blocks):
        ms, mt = msd_mod.self_and_collective_msd(positions[b * n:(b + 1) * n])
        d_self.append(transport.diffusion_coefficient(t, ms.sum(axis=1), win))
        d_sigma.append(transport.diffusion_coefficient(t, mt.sum(axis=1), win))
        d_axes.append([transport.diffusion_coefficient(t, ms[:, a], win, dim=1) for a in range(3)])
    return np.array(d_self), np.array(d_sigma), np.array(d_axes)
