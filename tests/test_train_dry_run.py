"""Every recipe in configs/ passes `--dry-run`, on generated fake data where the data set is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikingjelly_psn.train.cli import default_config_path, main
from spikingjelly_psn.train.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
# Small batch and narrow nets keep each dry run to a few seconds on a 2-core CPU; the
# recipe's structure (model, neuron, data pipeline, loss) is what is being checked.
QUICK = ["data.batch_size=2", "data.num_workers=0"]
NARROW = {
    "cifar10_csnn": ["model.channels=16", "model.hidden=64"],
    "cifar10dvs_vgg": ["model.channels=4"],
    "seq_cifar_net": ["model.channels=16", "model.hidden=32"],
}


def test_there_are_recipes_for_every_paper_run():
    names = {p.stem for p in CONFIGS}
    for expected in (
        "digits_mfpsn",
        "digits_psn",
        "digits_masked_psn",
        "digits_sliding_psn",
        "digits_lif",
        "psn_scifar10_psn",
        "psn_scifar100_masked_psn",
        "psn_scifar100_sliding_psn",
        "psn_cifar10_T4",
        "psn_cifar10dvs_T10",
        "mfpsn_scifar10",
        "mfpsn_scifar100",
        "psn_scifar10_lif",
    ):
        assert expected in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_dry_run(path, capsys):
    text = path.read_text()
    assert "reference:" in text
    extra = NARROW.get(load_config(path).model.name, [])
    status = main(["--config", str(path), "--dry-run", "--fake-data", "--set", *QUICK, *extra])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "dry run OK" in out and "parameters:" in out


def test_packaged_default_recipe_is_the_one_in_configs():
    """The default ships inside the package (configs/ is not installed); the two must not drift."""
    in_configs = Path(__file__).resolve().parents[1] / "configs" / "digits_mfpsn.yaml"
    assert default_config_path().read_text() == in_configs.read_text()
