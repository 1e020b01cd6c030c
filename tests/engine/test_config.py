"""Config loading: base: inheritance, --set overrides, unknown keys, type checks, save/load round trip."""
import argparse

import pytest

from gpunit.deepi2i.config import DeepI2IConfig
from gpunit.engine.config import (
    ConfigError,
    add_config_arguments,
    config_from_args,
    config_to_dict,
    load_config,
    save_config,
)
from gpunit.gp_unit.config import Stage1Config, Stage2Config


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- inheritance and overrides
def test_defaults_only_gives_fresh_instances():
    cfg = load_config(None, Stage2Config)
    assert cfg == Stage2Config()
    cfg.train.betas.append(1.0)
    cfg.data.source.append("x")
    assert load_config(None, Stage2Config).train.betas == [0.0, 0.99]
    assert Stage2Config().data.source == []


def test_two_level_base_chain(tmp_path):
    write(tmp_path / "grand.yaml", "name: grand\ntrain:\n  lr: 0.5\n  iterations: 10\nmodel:\n  image_size: 64\n")
    write(tmp_path / "sub/parent.yaml", "base: ../grand.yaml\nname: parent\ntrain:\n  lr: 0.25\n")
    child = write(tmp_path / "sub/child.yaml", "base: parent.yaml\ntrain:\n  batch_size: 4\n")

    cfg = load_config(child, Stage2Config)

    assert cfg.name == "parent"            # parent beats grandparent
    assert cfg.train.lr == 0.25
    assert cfg.train.iterations == 10      # deep merge keeps the grandparent's other train keys
    assert cfg.train.batch_size == 4       # the child's own value
    assert cfg.model.image_size == 64
    assert cfg.train.weight_decay == Stage2Config().train.weight_decay  # untouched: default
    assert cfg.model.skip_resolutions == [16, 32]


def test_overrides_beat_files(tmp_path):
    path = write(tmp_path / "a.yaml", "train:\n  lr: 0.5\ndata:\n  source: [x]\n")
    cfg = load_config(path, Stage2Config, ["train.lr=2e-4", "model.image_size=64", "data.source=[a,b]",
                                           "train.lr=3e-4"])
    assert cfg.train.lr == pytest.approx(3e-4)  # the last override wins
    assert cfg.model.image_size == 64
    assert cfg.data.source == ["a", "b"]


def test_override_of_a_string_field_keeps_the_text():
    cfg = load_config(None, Stage1Config, ["name=2024", "loss.vgg_weights=null", "data.unpaired_root=null"])
    assert cfg.name == "2024"
    assert cfg.loss.vgg_weights is None
    assert cfg.data.unpaired_root is None


def test_empty_file_and_empty_section_set_nothing(tmp_path):
    assert load_config(write(tmp_path / "e.yaml", ""), Stage1Config) == Stage1Config()
    assert load_config(write(tmp_path / "s.yaml", "train:\n"), Stage1Config) == Stage1Config()


# ----------------------------------------------------------------------------- unknown keys
@pytest.mark.parametrize("text, key, hint", [
    ("nmae: x\n", "nmae", "name"),
    ("train:\n  lrr: 0.1\n", "train.lrr", "train.lr"),
    ("model:\n  image_sise: 64\n", "model.image_sise", "model.image_size"),
    ("model:\n  lr: 0.1\n", "model.lr", "train.lr"),  # right key, wrong section (also 'sampler.lr')
])
def test_unknown_key_in_file(tmp_path, text, key, hint):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path, Stage2Config)
    message = str(err.value)
    assert f"unknown key '{key}'" in message
    assert str(path) in message
    assert "did you mean" in message and f"'{hint}'" in message


def test_unknown_key_in_base_names_the_base_file(tmp_path):
    write(tmp_path / "parent.yaml", "train:\n  batch_sise: 2\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\n")
    with pytest.raises(ConfigError, match=r"'train.batch_sise' in .*parent\.yaml; did you mean 'train.batch_size'"):
        load_config(child, Stage1Config)


def test_unknown_key_in_override():
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr' in --set; did you mean 'train.lr'\?"):
        load_config(None, Stage2Config, ["train.lrr=1e-4"])


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'sampler.zzz'.*valid keys in sampler: epochs, max_epochs"):
        load_config(None, Stage2Config, ["sampler.zzz=1"])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, Stage2Config, ["train.lr"])


# ----------------------------------------------------------------------------- types
@pytest.mark.parametrize("text, key, expected, got", [
    ("train:\n  iterations: ten\n", "train.iterations", "int", "'ten'"),
    ("train:\n  lr: [0.1, 0.2]\n", "train.lr", "float", "[0.1, 0.2]"),
    ("train:\n  batch_size: true\n", "train.batch_size", "int", "True"),
    ("name: {a: 1}\n", "name", "str", "{'a': 1}"),
    ("train:\n  betas: 0.9\n", "train.betas", "list[float]", "0.9"),
    ("model:\n  skip_resolutions: [16, x]\n", "model.skip_resolutions", "list[int]", "[16, 'x']"),
    ("data:\n  flip: 1\n", "data.flip", "bool", "1"),
])
def test_wrong_type(tmp_path, text, key, expected, got):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path, Stage2Config)
    assert str(err.value) == f"'{key}' in {path} expects {expected}, got {got}"


def test_scalar_for_section_is_an_error(tmp_path):
    path = write(tmp_path / "bad.yaml", "train: 5\n")
    with pytest.raises(ConfigError, match=r"'train' in .*bad\.yaml is a section"):
        load_config(path, Stage2Config)


def test_float_accepts_ints_and_exponent_strings(tmp_path):
    path = write(tmp_path / "a.yaml", "train:\n  lr: 2e-4\n  weight_decay: 0\n  betas: [0, 9e-1]\n")
    cfg = load_config(path, Stage2Config)
    assert cfg.train.lr == pytest.approx(2e-4) and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.train.weight_decay, float)
    assert cfg.train.betas == [0.0, 0.9]


def test_optional_string_accepts_null_and_string(tmp_path):
    path = write(tmp_path / "a.yaml", "data:\n  unpaired_root: null\nloss:\n  vgg_weights: w/vgg.pth\n")
    cfg = load_config(path, Stage1Config)
    assert cfg.data.unpaired_root is None
    assert cfg.loss.vgg_weights == "w/vgg.pth"
    with pytest.raises(ConfigError, match=r"'data.paired_root' in --set expects str, got None"):
        load_config(None, Stage1Config, ["data.paired_root=null"])  # plain str does not take null


def test_mapping_of_folder_counts(tmp_path):
    path = write(tmp_path / "a.yaml", "data:\n  domain_counts: {1001_face: 29000, 7: 5}\n")
    cfg = load_config(path, Stage1Config)
    assert cfg.data.domain_counts == {"1001_face": 29000, "7": 5}  # a numeric folder name stays a name
    assert Stage1Config().data.domain_counts == {}  # fresh per instance, not shared
    cfg = load_config(path, Stage1Config, ["data.domain_counts={2_dog: 0}"])  # an override replaces the mapping
    assert cfg.data.domain_counts == {"2_dog": 0}
    with pytest.raises(ConfigError, match=r"'data.domain_counts' in --set expects dict\[str, int\], got"):
        load_config(None, Stage1Config, ["data.domain_counts={a: many}"])
    with pytest.raises(ConfigError, match="expects dict"):
        load_config(None, Stage1Config, ["data.domain_counts=[1, 2]"])
    save_config(load_config(path, Stage1Config), tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml", Stage1Config).data.domain_counts == {"1001_face": 29000, "7": 5}


def test_a_width_table_without_spaces_is_explained():
    cfg = load_config(None, DeepI2IConfig, ["model.fusion_weights={16: 1, 8: 0.5}"])
    assert cfg.model.fusion_weights == {16: 1.0, 8: 0.5}
    with pytest.raises(ConfigError, match=r"got \{961: None, 481: None\} \(write \{16: 1, 8: 1\} with a space"):
        load_config(None, DeepI2IConfig, ["model.fusion_weights={16:1, 8:1}"])  # YAML 1.1: 16:1 is base 60


# ----------------------------------------------------------------------------- files
def test_save_load_round_trip(tmp_path):
    cfg = load_config(None, Stage2Config, ["train.lr=2e-4", "data.source=[a, b]", "data.source_counts=[3, 0]",
                                           "loss.vgg_weights=x.pth", "name=2e-4", "train.weight_decay=1e-20"])
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    loaded = load_config(path, Stage2Config)
    assert loaded == cfg
    assert config_to_dict(loaded) == config_to_dict(cfg)
    assert loaded.name == "2e-4"
    assert not list(path.parent.glob("*.tmp"))


def test_cycle_in_base(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle in 'base:' chain: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml", Stage1Config)


def test_missing_base_file(tmp_path):
    path = write(tmp_path / "a.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"base file 'nowhere.yaml' named in .*a\.yaml not found"):
        load_config(path, Stage1Config)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml", Stage1Config)


def test_invalid_yaml_is_one_line(tmp_path):
    path = write(tmp_path / "a.yaml", "train:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"cannot parse .*a\.yaml") as err:
        load_config(path, Stage1Config)
    assert "\n" not in str(err.value)


def test_non_mapping_file(tmp_path):
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path / "a.yaml", "- 1\n- 2\n"), Stage1Config)


# ----------------------------------------------------------------------------- command line
def make_parser(default_config=None):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, default_config)
    return parser


def test_command_line(tmp_path):
    path = write(tmp_path / "a.yaml", "train:\n  lr: 0.5\n")
    args = make_parser().parse_args(["--config", str(path), "--set", "train.seed=3", "model.image_size=64",
                                     "--set", "train.lr=0.1"])
    cfg = config_from_args(args, Stage1Config)
    assert (cfg.train.seed, cfg.model.image_size, cfg.train.lr) == (3, 64, 0.1)
    assert args.resume is None


def test_command_line_defaults_and_resume(tmp_path):
    path = write(tmp_path / "d.yaml", "name: from_default\n")
    parser = make_parser(str(path))
    assert config_from_args(parser.parse_args([]), Stage1Config).name == "from_default"
    assert parser.parse_args(["--resume"]).resume == "auto"
    assert parser.parse_args(["--resume", "ck.pt"]).resume == "ck.pt"


def test_command_line_error_is_one_line(capsys):
    parser = make_parser()
    args = parser.parse_args(["--set", "train.lrr=1"])
    with pytest.raises(SystemExit) as exit_info:
        try:
            config_from_args(args, Stage1Config)
        except ConfigError as err:
            parser.error(str(err))
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown key 'train.lrr' in --set; did you mean 'train.lr'?" in last_line
