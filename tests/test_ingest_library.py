"""Ingest as a library, without the CLI: the process pool gives back the runs in the order of the
input list (the same runs as one process), a damaged file is listed instead of stopping the run
when asked, and the append plan keeps the file's type map first and knows each source in it by
the sha256 of its text."""

import gzip
import hashlib

import pytest

from cathodeml.errors import CathodemlError, TypeMapError
from cathodeml.io.dataset import write_dataset
from cathodeml.io.ingest import drop_duplicate_sources, plan_append, read_outcars
from cathodeml.io.outcar import runs_to_dataset

NAMES = ("dpdata_H2O_md3_ispin1_v5.4.4.OUTCAR.gz", "custodian_FeO_LDAU_relax28_ispin2_v5.3.5.OUTCAR.gz",
         "parsevasp_Si2_relax_unfinished_ispin1_v5.4.4.OUTCAR.gz")


def _text_sha256(path):
    return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


@pytest.fixture
def outcars(data_dir):
    return [data_dir / "outcars" / n for n in NAMES]


def test_pool_returns_the_runs_of_one_process_in_input_order(outcars):
    reports = []
    serial, _ = read_outcars(outcars, jobs=1)
    pooled, failed = read_outcars(outcars[::-1], jobs=2, progress=lambda *a: reports.append(a))
    assert failed == [] and [r.sha256 for r in pooled] == [_text_sha256(p) for p in outcars[::-1]]
    assert [r.energies.tolist() for r in pooled[::-1]] == [r.energies.tolist() for r in serial]
    # the last report: every byte of every file, all files done
    total = sum(p.stat().st_size for p in outcars)
    assert reports[0] == (0, total, 0, 3) and reports[-1] == (total, total, 3, 3)


def test_a_damaged_file_is_listed_with_skip_bad_and_stops_the_run_without(outcars, tmp_path):
    bad = tmp_path / "OUTCAR"
    bad.write_text("not an OUTCAR\n")
    with pytest.raises(CathodemlError):
        read_outcars([outcars[0], bad])
    skipped = []
    runs, failed = read_outcars([outcars[0], bad], skip_bad=True, on_skip=lambda p, e: skipped.append(p))
    assert len(runs) == 1 and [f["path"] for f in failed] == skipped == [str(bad)]


def test_append_plan_keeps_the_file_type_map_first_and_knows_its_sources(outcars, tmp_path):
    out = tmp_path / "data.h5"
    runs, _ = read_outcars(outcars[:2])
    dataset, _ = runs_to_dataset(runs, type_map=None)
    write_dataset(out, dataset)

    plan = plan_append(out, "free", [*dataset.type_map, "Si"])  # a new species goes after the file's
    assert plan.file_type_map == list(dataset.type_map)
    assert plan.type_map == list(dataset.type_map) + ["Si"]
    assert plan_append(out, "free", list(dataset.type_map[:1])).type_map == list(dataset.type_map)
    assert set(plan.known_sources) == {_text_sha256(p) for p in outcars[:2]}
    again, _ = read_outcars(outcars)
    kept, duplicates = drop_duplicate_sources(again, dict(plan.known_sources))
    assert [r.sha256 for r in kept] == [_text_sha256(outcars[2])] and len(duplicates) == 2

    with pytest.raises(CathodemlError, match="pass --energy free"):
        plan_append(out, "sigma0", None)
    with pytest.raises(TypeMapError, match="must start with it"):
        plan_append(out, "free", ["Si", *dataset.type_map])
