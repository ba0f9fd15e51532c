"""Training data streamed from HDF5: batches read, labelled and neighbour-listed on the host while
the device runs the previous step, so neither device nor host memory grows with the dataset.

Why.  The resident path (`train.step.device_groups`) puts every frame and its neighbour list on the
device before the loop: ~0.5 MB per 100-atom frame with its list, so a million frames (the
Li3TiCl6 paper's 1.3 M) cannot fit.  Here a system is only an index into its file (`io.dataset.
SystemIndex`, the training frame numbers and their energies: 16 bytes a frame); each step's frames
are read from the file (`io.dataset.read_frames`), turned into a `LabelledSystem` by the same
checks as resident data (`train.data.labelled_systems`: virtual spin atoms placed from their
record, non-finite labels refused), given neighbour lists on the host and put on the device as a
one-batch `DeviceGroup`, which the unchanged jitted `train_step` takes with frame indices 0..B-1.
A background thread draws the batches in order and a few worker threads prepare up to `prefetch`
of them ahead (h5py, vesin and numpy release the GIL for their work); the arrays stay numpy until
the jitted step takes them, in one transfer.

Order and restarts.  `EpochSampler` draws systems as `FrameSampler` does (probability ∝ batches),
but the shuffle of system k in epoch e is a pure function of (seed, k, e), so its state is a few
integers per system instead of a permutation of every frame, and a checkpoint resumes at the exact
batch: the state saved is the sampler's state *after the last batch the loop consumed*, not after
the batches the thread has read ahead.  The neighbour-list capacity per system grows with the
largest batch seen (one recompilation each time it does), never truncating.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import os
import queue
import threading

import h5py
import numpy as np

from cathodeml.errors import CathodemlError
from cathodeml.io.dataset import Dataset, FrameReader, SystemIndex
from cathodeml.train.data import FrameSampler, LabelledSystem, labelled_systems

# At most this many frames per system are held out (and kept in memory) for validation when streaming.
STREAM_VALID_MAX = 1000


@dataclasses.dataclass
class StreamSystem:
    """One system of a streamed run: where it lies, its atoms in the run's type map, the frame numbers
    (into the file's system) it trains on and their energies (eV; for the energy bias and the data
    fingerprint).  `template` is a few of its frames read whole: n_real, the virtual sites, whether
    forces and virials are labelled."""

    index: SystemIndex
    type_map: list[str]
    file_attrs: dict
    run_types: np.ndarray
    frames: np.ndarray
    energies: np.ndarray
    template: LabelledSystem
    batch_size: int = 1
    capacity: tuple | None = None

    @property
    def name(self) -> str:
        return self.template.name

    @property
    def n_frames(self) -> int:
        return int(self.frames.size)

    @property
    def n_real(self) -> int:
        return self.template.n_real

    @property
    def atom_types(self) -> np.ndarray:
        """Real atoms' types (what the energy bias counts)."""
        return self.template.atom_types

    def fingerprint(self, h) -> None:
        """Feed what identifies the training data of this system into the hash `h` (no frame is read)."""
        for a in (self.template.all_types(), self.frames, self.energies):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(self.index.name.encode())

    def read(self, reader: FrameReader, file_frames: np.ndarray, where: str) -> LabelledSystem:
        """The frames `file_frames` (any order, repeats allowed) as a LabelledSystem, in that order."""
        unique, inverse = np.unique(file_frames, return_inverse=True)
        system = dataclasses.replace(reader.read(unique), atom_types=self.run_types)
        bad = ~np.isfinite(system.energies) if system.energies is not None else np.zeros(unique.size, bool)
        if system.forces is not None:
            bad |= ~np.isfinite(system.forces[:, :self.n_real]).all(axis=(1, 2))
        if bad.any():  # named by its frame in the file, not its place in the batch
            raise CathodemlError(f"{where}: frame {int(unique[bad][0])} has a non-finite energy or force label; "
                                 "remove it (e.g. re-ingest without unconverged runs)")
        labelled = labelled_systems(Dataset(self.type_map, [system], self.file_attrs), where)[0]
        return labelled if unique.size == file_frames.size and np.all(inverse == np.arange(unique.size)) \
            else labelled.select(inverse)


def stream_fingerprint(systems: list[StreamSystem]) -> str:
    h = hashlib.sha256(b"stream")
    for s in systems:
        s.fingerprint(h)
    return h.hexdigest()


class EpochSampler(FrameSampler):
    """`FrameSampler` whose shuffle of system k in epoch e is drawn from PCG64([seed, k, e]): the same
    batches from the same seed, and a state of O(systems) numbers (rng, epochs, cursors)."""

    def __init__(self, systems, seed: int):
        self.seed = int(seed)
        self.epochs = [0] * len(systems)
        super().__init__(systems, seed)

    def _first_order(self, k: int) -> np.ndarray:
        return self._order(k)

    def _next_order(self, k: int) -> np.ndarray:
        self.epochs[k] += 1
        return self._order(k)

    def _order(self, k: int) -> np.ndarray:
        return np.random.Generator(np.random.PCG64([self.seed, k, self.epochs[k]])).permutation(self.sizes[k])

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "epochs": list(self.epochs), "cursors": list(self.cursors)}

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.epochs = [int(e) for e in state["epochs"]]
        self.cursors = [int(c) for c in state["cursors"]]
        self.orders = [self._order(k) for k in range(len(self.sizes))]


class StreamedBatches:
    """Batches of streamed systems, prepared ahead by a thread: `next()` → (DeviceGroup of one batch,
    frame indices 0..B-1); `state()` is the sampler state after the last batch `next()` returned."""

    def __init__(self, systems: list[StreamSystem], config, seed: int, prefetch: int = 8, workers: int | None = None):
        self.systems, self.config = systems, config
        self.sampler = EpochSampler(systems, seed)
        self.prefetch = prefetch
        self.workers = workers or max(1, min(4, (os.cpu_count() or 2) // 2))
        self._lock = threading.Lock()
        self._state = self.sampler.state()
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.has_virial = any(s.template.virials is not None for s in systems)

    def set_state(self, state: dict) -> None:
        if self._thread is not None:
            raise RuntimeError("set the sampler state before the first batch")
        self.sampler.set_state(state)
        self._state = self.sampler.state()

    def state(self) -> dict:
        return self._state

    def next(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="cathodeml-batches", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        group, frames, self._state = item
        return group, frames

    def close(self) -> None:
        self._stop.set()
        while self._thread is not None and self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread = None

    def _produce(self) -> None:
        """Draw batches in order and have `workers` threads read them (h5py, vesin and numpy release the
        GIL for their work), handing them on in the order drawn, each with the sampler state after it."""
        local = threading.local()  # each worker thread opens the files itself

        def make(k, frames):
            if not hasattr(local, "files"):
                local.files, local.readers = {}, {}
                opened.append(local.files)
            return self.batch(k, frames, local.readers, local.files)

        opened: list[dict] = []
        pending: collections.deque = collections.deque()
        try:
            with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="cathodeml-batch") as pool:
                while not self._stop.is_set():
                    while len(pending) < self.prefetch:
                        k, frames = self.sampler.next()
                        pending.append((pool.submit(make, k, frames), frames.size, self.sampler.state()))
                    future, size, state = pending.popleft()
                    item = (future.result(), np.arange(size), state)
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            pass
                for future, _, _ in pending:
                    future.cancel()
        except BaseException as exc:  # noqa: BLE001 -- handed to the training loop, which raises it
            self._queue.put(exc)
        finally:
            for files in opened:
                for f in files.values():
                    f.close()

    def batch(self, k: int, frames: np.ndarray, readers: dict | None = None, files: dict | None = None):
        """The DeviceGroup of system k's training frames `frames` (positions in its frame list), its
        arrays left on the host: the jitted step moves them, in one transfer, when it is called."""
        from cathodeml.model.neighbors import build_neighbor_lists
        from cathodeml.train.step import device_groups

        s = self.systems[k]
        readers = {} if readers is None else readers
        if k not in readers:
            files = {} if files is None else files
            if s.index.path not in files:
                files[s.index.path] = h5py.File(s.index.path, "r")
            readers[k] = FrameReader(files[s.index.path], s.index)
        labelled = s.read(readers[k], s.frames[frames], f"{s.index.path}:{s.index.name}")
        labelled.neighbours = build_neighbor_lists(labelled.all_coords(), None if labelled.nopbc else labelled.cells,
                                                   labelled.all_types(), self.config.rcut, self.config.ntypes,
                                                   capacity=s.capacity, margin=1.1)
        with self._lock:  # capacities only grow, whichever worker saw the larger batch
            s.capacity = tuple(max(a, b) for a, b in zip(s.capacity or labelled.neighbours.capacity,
                                                         labelled.neighbours.capacity))
        groups, _ = device_groups([labelled], on_host=True)
        return groups[0]
