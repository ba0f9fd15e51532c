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


def test_both_dpdata_layouts_read_as_the_same_system(data_dir, tmp_path):
    """dpdata writes one System at the file's root and a MultiSystems as a group per system; every
    reader (datasets, file kind, frame columns, md structures) sees the same frames in both."""
    from cathodeml.errors import CathodemlError
    from cathodeml.io.dataset import file_format, file_kind, read_frame_column
    from cathodeml.io.structure import read_structure

    ref = dpdata.LabeledSystem(str(data_dir / "deepmd/nio_spin/data_2"), fmt="deepmd/npy")
    ref.to("deepmd/hdf5", str(tmp_path / "root.h5"))
    dpdata.MultiSystems(ref).to("deepmd/hdf5", str(tmp_path / "groups.h5"))
    with h5py.File(tmp_path / "root.h5") as f:
        assert "type.raw" in f and "set.000" in f
    root, groups = read_dataset(tmp_path / "root.h5"), read_dataset(tmp_path / "groups.h5")
    assert root.type_map == groups.type_map == ["Ni", "O"] and root.systems[0].name == "root"
    for a, b in zip(root.systems, groups.systems, strict=True):
        np.testing.assert_array_equal(a.atom_types, b.atom_types)
        np.testing.assert_allclose(a.coords, ref["coords"])
        np.testing.assert_allclose(a.energies, ref["energies"])
        np.testing.assert_array_equal(a.forces, b.forces)
    assert file_kind(tmp_path / "root.h5") == file_kind(tmp_path / "groups.h5") == "dataset"
    assert file_format(tmp_path / "root.h5") == ("dataset", "deepmd/hdf5")
    np.testing.assert_allclose(read_frame_column(tmp_path / "root.h5", "energy")[1].ravel(), ref["energies"])
    frame = read_structure(f"{tmp_path / 'root.h5'}:root:-1")
    np.testing.assert_allclose(frame.positions, ref["coords"][-1])
    assert frame.symbols.count("Ni") == int(np.sum(ref["atom_types"] == 0))
    with pytest.raises(CathodemlError, match="root"):  # appending beside a root system would hide the new one
        write_dataset(tmp_path / "root.h5", groups, append=True)
