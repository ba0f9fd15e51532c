"""Training configs: the shipped presets are the published setups; DeePMD-kit input.json maps onto them."""

from pathlib import Path

import pytest

from cathodeml.errors import CathodemlError
from cathodeml.train.config import auto_batch_size, read_config, with_overrides

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def test_spin_cathode_preset_is_the_spin_papers_setup():
    cfg, ignored = read_config(CONFIGS / "spin_cathode.toml")
    assert ignored == []
    assert cfg.model.embedding_neurons == (25, 50, 100)
    assert cfg.model.fitting_neurons == (240, 240, 240)
    assert (cfg.learning_rate.start_lr, cfg.learning_rate.stop_lr) == (1.0e-3, 3.51e-8)
    assert cfg.training.steps == 4_000_000
    assert cfg.model.activation == "tanh"


def test_li3ticl6_preset_is_the_li3ticl6_papers_setup():
    cfg, _ = read_config(CONFIGS / "li3ticl6.toml")
    assert cfg.model.rcut == 7.0
    assert cfg.model.embedding_neurons == (32, 64, 128)
    assert cfg.model.fitting_neurons == (256, 256, 256)
    assert (cfg.learning_rate.start_lr, cfg.learning_rate.stop_lr, cfg.learning_rate.decay_steps) == (1e-3, 1e-8, 5000)


def test_every_preset_key_is_documented_by_a_comment():
    for path in CONFIGS.glob("*.toml"):
        lines = [ln for ln in path.read_text().splitlines() if "=" in ln and not ln.lstrip().startswith("#")]
        assert lines, path
        read_config(path)  # parses


def test_deepmd_input_json_maps_the_water_setup():
    cfg, ignored = read_config(ROOT / "tests" / "data" / "deepmd" / "nio_spin" / "input_torch.json")
    assert cfg.model.sel == (60, 60) and cfg.model.rcut == 5.6 and cfg.model.rcut_smth == 5.4
    assert cfg.model.type_map == ("Ni", "O")
    assert cfg.model.fitting_resnet_dt is True and cfg.model.embedding_resnet_dt is False
    assert cfg.loss.start_pref_f == 1000 and cfg.loss.limit_pref_f == 1  # start_pref_fr → force prefactor
    assert cfg.training.steps == 100000 and cfg.training.batch_size == 3
    assert cfg.training.validation_fraction == 0.0  # validation systems given explicitly
    assert cfg.training.valid_data[0].endswith("data_reformat/data_2")
    assert any(k.startswith("model.spin") for k in ignored)  # reported, not silently dropped
    assert "loss.start_pref_fm" in ignored


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nrcutt = 6.0\n")
    with pytest.raises(CathodemlError, match="model.rcutt"):
        read_config(path)


def test_impossible_cutoffs_are_an_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nrcut = 4.0\nrcut_smth = 5.0\n")
    with pytest.raises(CathodemlError, match="rcut_smth"):
        read_config(path)


def test_command_line_overrides_the_file():
    cfg, _ = read_config(CONFIGS / "tiny.toml")
    new = with_overrides(cfg, training__steps=7, training__batch_size=None)
    assert new.training.steps == 7 and new.training.batch_size == cfg.training.batch_size
    with pytest.raises(CathodemlError, match="training.stepz"):
        with_overrides(cfg, training__stepz=1)


def test_auto_batch_size_gives_at_least_n_atoms_per_batch():
    assert auto_batch_size("auto", 192) == 1
    assert auto_batch_size("auto", 5) == 7  # ⌈32/5⌉
    assert auto_batch_size("auto:100", 32) == 4
    assert auto_batch_size(3, 32) == 3
