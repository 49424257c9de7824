from pathlib import Path

import pytest

from p2gmed.config import Config, config_to_dict, dump_config, load_config
from p2gmed.errors import InputError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_preset_loads_strictly(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_paper_preset_has_the_papers_settings():
    cfg = load_config(Path(__file__).parents[1] / "configs" / "brats23-transfer.yaml")
    assert cfg.data.roi_size == (96, 96, 96)
    assert cfg.model.feature_size == 48
    assert cfg.train.lr == pytest.approx(2e-4) and cfg.train.weight_decay == pytest.approx(1e-5)
    assert cfg.train.batch_size == 1 and cfg.train.epochs == 1000
    assert cfg.bottleneck_size == (3, 3, 3) and cfg.bottleneck_channels == 768


def test_ablation_presets_switch_exactly_their_terms():
    root = Path(__file__).parents[1] / "configs" / "ablations"
    table = {p.name.split("-")[1]: load_config(p) for p in root.glob("table4-*.yaml")}
    assert [(c.loss.equivariance > 0, c.loss.invariance > 0, c.model.use_prior) for _, c in sorted(table.items())] == [
        (True, False, False), (False, True, False), (True, True, False),
        (True, False, True), (False, True, True), (True, True, True),
    ]
    assert all(c.loss.contrast == 1.0 and c.loss.decomposition == 1.0 for c in table.values())


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  invariance_wieght: 0\n")
    with pytest.raises(InputError, match="loss.invariance_wieght"):
        load_config(p)


@pytest.mark.parametrize(
    "override, match",
    [("train.lr=fast", "train.lr"), ("model.use_prior=3", "model.use_prior"), ("data.roi_size=[32,32]", "roi_size"),
     ("model.fusion=other", "model.fusion"), ("train.max_steps=1.5", "train.max_steps")],
)
def test_wrong_types_are_errors(override, match):
    with pytest.raises(InputError, match=match):
        load_config(None, [override])


def test_set_overrides_and_validation():
    cfg = load_config(None, ["loss.invariance=0", "data.modalities=[t1,flair]", "data.roi_size=[64,64,32]"])
    assert cfg.loss.invariance == 0.0
    assert cfg.data.modalities == ("t1n", "t2f")  # old spellings map onto canonical names
    with pytest.raises(InputError, match="divisible by 32"):
        load_config(None, ["data.roi_size=[48,48,48]"])
    with pytest.raises(InputError, match="multiple of 12"):
        load_config(None, ["model.feature_size=16"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=0.1", "model.use_prior=false"])
    p = tmp_path / "config.yaml"
    p.write_text(dump_config(cfg))
    again = load_config(p)
    assert config_to_dict(again) == config_to_dict(cfg)


def test_retired_keys_of_older_checkpoints_are_ignored_not_refused():
    from p2gmed.config import config_from_dict, config_to_dict

    stored = config_to_dict(Config())
    stored["tune"].update(subset_sampling="uniform", combine="mean_fused")  # what older runs wrote
    assert config_from_dict(stored) == Config().validate()
    stored["tune"]["nonsense"] = 1
    with pytest.raises(InputError, match="tune.nonsense"):
        config_from_dict(stored)
