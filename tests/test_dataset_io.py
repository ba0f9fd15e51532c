"""The dataset file is DeePMD-kit's deepmd/hdf5 layout: dpdata reads what we write, appends never
rewrite frames, and a failed write leaves the previous file as it was."""

import dpdata
import h5py
import numpy as np
import pytest

from cathodeml.io.dataset import Dataset, read_dataset, write_dataset


def test_npy_tree_round_trips_through_hdf5_and_dpdata_reads_it(data_dir, tmp_path):
    ds = read_dataset(data_dir / "deepmd/nio_spin")
    assert ds.type_map == ["Ni", "O"] and [s.n_frames for s in ds.systems] == [60, 60, 31]
    out = tmp_path / "nio.h5"
    write_dataset(out, ds)
    back = read_dataset(out)
    for a, b in zip(ds.systems, back.systems):
        np.testing.assert_array_equal(a.coords, b.coords)
        np.testing.assert_array_equal(a.frame_data["spin"], b.frame_data["spin"])
    ms = dpdata.MultiSystems().from_deepmd_hdf5(str(out))
    assert ms.get_nframes() == 151
    ref = dpdata.LabeledSystem(str(data_dir / "deepmd/nio_spin/data_0"), fmt="deepmd/npy")
    got = dpdata.LabeledSystem(f"{out}#data_0", fmt="deepmd/hdf5")
    np.testing.assert_allclose(got["coords"], ref["coords"])
    np.testing.assert_allclose(got["energies"], ref["energies"])
    np.testing.assert_allclose(got["forces"], ref["forces"])


def test_append_adds_a_set_and_keeps_existing_frames(data_dir, tmp_path):
    ds = read_dataset(data_dir / "deepmd/nio_spin")
    out = tmp_path / "nio.h5"
    for s in ds.systems:
        s.name = ""  # named by formula: both are Ni16O16 and land in one group
    write_dataset(out, Dataset(ds.type_map, ds.systems[:1]))
    write_dataset(out, Dataset(ds.type_map, ds.systems[1:2]), append=True)
    with h5py.File(out) as f:
        assert list(f.keys()) == ["Ni16O16"]
        assert [k for k in f["Ni16O16"].keys() if k.startswith("set.")] == ["set.000", "set.001"]
    back = read_dataset(out)
    np.testing.assert_array_equal(back.systems[0].coords[:60], ds.systems[0].coords)
    assert back.systems[0].n_frames == 120


def test_failed_write_leaves_previous_file_untouched(data_dir, tmp_path):
    ds = read_dataset(data_dir / "deepmd/nio_spin")
    out = tmp_path / "nio.h5"
    write_dataset(out, Dataset(ds.type_map, ds.systems[:1]))
    before = out.read_bytes()
    broken = Dataset(ds.type_map, [ds.systems[1]])
    broken.systems[0].frame_data = {"bad": object()}  # cannot be stored in HDF5
    with pytest.raises(Exception):
        write_dataset(out, broken, append=True)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nio.h5"]


def test_npy_system_without_type_map_takes_the_given_names(tmp_path):
    """DeePMD-kit semantics: a system with no type_map.raw has type.raw indexing the model's type map."""
    from cathodeml.errors import TypeMapError
    from cathodeml.io.dataset import read_dataset

    from pathlib import Path

    slice_dir = Path(__file__).parent / "data" / "deepmd" / "lgps_slice"
    unnamed = slice_dir / "train" / "LiGePS-iter.000000-data.000"
    assert not (unnamed / "type_map.raw").exists()
    assert read_dataset(unnamed).type_map == ["Type_0", "Type_1", "Type_2", "Type_3"]
    ds = read_dataset(slice_dir, ["Li", "Ge", "P", "S"])  # mixed: two unnamed systems, one with type_map.raw
    assert ds.type_map == ["Li", "Ge", "P", "S"]
    for s in ds.systems:
        counts = np.bincount(s.atom_types, minlength=4)
        assert counts.tolist() == ([20, 2, 4, 24] if s.atom_types.size == 50 else [160, 16, 32, 192])
    with pytest.raises(TypeMapError, match="uses 4 types"):
        read_dataset(unnamed, ["Li", "Ge"])
