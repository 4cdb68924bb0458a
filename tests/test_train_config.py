"""Config loading, dotted overrides and the one-message validation of `spikingjelly-psn train`."""

from __future__ import annotations

import pytest

from spikingjelly_psn.train.cli import main
from spikingjelly_psn.train.config import ConfigError, check_paths, load_config, parse_override


def test_override_parses_yaml_values_and_nests():
    assert parse_override("optim.lr=1e-3") == {"optim": {"lr": 1e-3}}
    assert parse_override("neuron.dilations=[1, 2, 4]") == {"neuron": {"dilations": [1, 2, 4]}}
    assert parse_override("train.amp=bf16") == {"train": {"amp": "bf16"}}


def test_overrides_apply_and_ints_widen_to_floats():
    cfg = load_config(None, ["optim.lr=1", "neuron.k=8", "neuron.name=SlidingPSN"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.neuron.k == 8 and cfg.neuron.name == "SlidingPSN"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (["optim.lrr=0.1"], "unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
        (["optim.lr=fast"], "optim.lr must be a number, got 'fast'"),
        (["neuron.k=2.5"], "neuron.k must be an integer"),
        (["neuron.name=LIF"], "neuron.name: unknown neuron 'LIF' (did you mean 'LIFNode'?)"),
        (["model.name=resnet18"], "model.name: unknown model 'resnet18'"),
        (["train.amp=fp8"], "train.amp must be 'off' or 'fp16' or 'bf16'"),
        (["optim=3"], "optim must be a mapping"),
        (["optim.lr=.inf"], "optim.lr must be a finite number, got inf"),
        (["optim.lr=1e999"], "optim.lr must be a finite number, got inf"),
        (["optim.momentum=.nan"], "optim.momentum must be a finite number, got nan"),
        (["optim.grad_clip=-1"], "optim.grad_clip must be > 0 or null (off), got -1.0"),
        (["optim.grad_clip=0"], "optim.grad_clip must be > 0 or null (off), got 0.0"),
        (["optim.weight_decay=-1e-4"], "optim.weight_decay must be >= 0, got -0.0001"),
        (["optim.momentum=1.5"], "optim.momentum must be in [0, 1), got 1.5"),
        (["seed=-1"], "seed must be in [0, 4294967295], got -1"),
        (["seed=4294967296"], "seed must be in [0, 4294967295]"),
        (["data.num_workers=-1"], "data.num_workers must be >= 0, got -1"),
        (["data.random_erasing=2"], "data.random_erasing must be in [0, 1], got 2.0"),
        (["model.dropout=1"], "model.dropout must be in [0, 1), got 1.0"),
        (["neuron.surrogate_alpha=-2"], "neuron.surrogate_alpha must be > 0, got -2.0"),
        (["neuron.k=1000"], "neuron.k=1000 exceeds the 64 time-steps; set neuron.k<=64"),
        (
            ["neuron.name=SlidingPSN", "data.dataset=cifar10", "neuron.k=33"],
            "neuron.k=33 exceeds the 32 time-steps; set neuron.k<=32",
        ),
        (["neuron.name=LIFNode", "neuron.tau=1"], "neuron.tau must be > 1 for LIFNode, got 1.0"),
        (["train.nonfinite_patience=-1"], "train.nonfinite_patience must be >= 0, got -1"),
        (["name=../../x"], "name '../../x' must be a plain folder name"),
        (["name=/tmp/x"], "name '/tmp/x' must be a plain folder name"),
        (["name=.."], "name '..' must be a plain folder name"),
    ],
)
def test_invalid_configs_give_one_message_naming_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    assert needle in str(err.value)


def test_k_is_free_for_neurons_without_an_order():
    assert load_config(None, ["neuron.name=PSN", "neuron.k=1000"]).neuron.k == 1000


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("model:\n  kwargs: &a\n    x: *a\n", "holds a recursive YAML alias"),
        ("model:\n  kwargs:\n    x: &a [1, *a]\n", "holds a recursive YAML alias"),
        (
            "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcd", "bcde"))
            + "model: {kwargs: {x: *e}}\n",
            "expands to more than 100,000 values through YAML aliases",
        ),
        ("model: {kwargs: {x: " + "[" * 5000 + "]" * 5000 + "}}\n", "is nested too deeply"),
        ("\udcff\n", "cannot be read as text"),
    ],
)
def test_yaml_that_never_ends_or_is_not_text_is_refused(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError, match=needle):
        load_config(path)


def test_recursive_alias_in_an_override_is_refused():
    with pytest.raises(
        ConfigError, match="override 'model.kwargs=&x \\[\\*x\\]' holds a recursive"
    ):
        parse_override("model.kwargs=&x [*x]")


def test_missing_dataset_folder_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="data.root is not set"):
        check_paths(load_config(None, ["data.dataset=cifar10"]))
    missing = tmp_path / "nowhere"
    cfg = load_config(None, ["data.dataset=cifar10dvs", f"data.root={missing}"])
    with pytest.raises(ConfigError, match="data.root: folder .*nowhere' does not exist"):
        check_paths(cfg)
    cfg = load_config(None, ["data.dataset=cifar10", f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match="no 'cifar-10-batches-py' folder"):
        check_paths(cfg)


def test_unknown_zoo_builder_lists_choices():
    from spikingjelly_psn.train.data import build_data
    from spikingjelly_psn.train.models import build_model

    cfg = load_config(None, ["model.name=spiking_resnet.resnet_nope"])
    bundle = build_data(load_config(None, ["data.limit_train=4", "data.limit_test=4"]))
    bundle.sample_shape = (3, 32, 32)
    with pytest.raises(ConfigError, match="spiking_resnet.spiking_resnet18"):
        build_model(cfg, bundle, 4)


def test_cli_reports_config_errors_with_exit_status_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  datset: digits\n")
    assert main(["--config", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'data.datset'; did you mean 'data.dataset'" in err
    assert err.count("\n") == 1
    assert main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--set", "neuron.name=Foo", "--dry-run"]) == 2
    assert "unknown neuron 'Foo'" in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for option in ("--config", "--set", "--dry-run", "--resume", "--out", "--device", "--seed"):
        assert option in text


def _recipe(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_recipe_states_only_what_differs_from_its_base(tmp_path):
    _recipe(tmp_path / "bases" / "root.yaml", "seed: 7\noptim:\n  lr: 0.5\n  name: sgd\n")
    _recipe(tmp_path / "bases" / "mid.yaml", "base: root.yaml\nneuron:\n  k: 4\n")
    leaf = _recipe(tmp_path / "leaf.yaml", "base: bases/mid.yaml\noptim:\n  lr: 1e-2\n")
    cfg = load_config(leaf, ["neuron.name=SlidingPSN"])
    assert (cfg.seed, cfg.optim.name, cfg.optim.lr) == (7, "sgd", 1e-2)
    assert (cfg.neuron.k, cfg.neuron.name) == (4, "SlidingPSN")
    assert "base" not in cfg.to_dict()


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.yaml": "base: 3\n"}, "base must be the path of another recipe"),
        ({"a.yaml": "base: none.yaml\n"}, "its base 'none.yaml'"),
        ({"a.yaml": "base: a.yaml\n"}, "leads back to a recipe that inherits from it"),
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "leads back"),
        (
            {
                "a.yaml": "base: r1.yaml\n",
                **{f"r{i}.yaml": f"base: r{i + 1}.yaml\n" for i in range(1, 9)},
                "r9.yaml": "seed: 1\n",
            },  # fmt: skip
            "more than 8 recipes inherit from each other",
        ),
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "- a list\n"}, "must hold a mapping"),
    ],
)
def test_a_malformed_base_is_refused_naming_the_file(tmp_path, files, message):
    for name, text in files.items():
        _recipe(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "a.yaml")


def test_base_is_a_recipe_key_not_an_override():
    with pytest.raises(ConfigError, match="unknown config key 'base'"):
        load_config(None, ["base=other.yaml"])
