"""scripts/digits_table.py, which regenerates the README's digits table, runs and prints it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "digits_table", ROOT / "scripts" / "digits_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_table_of_one_short_run(tmp_path, capsys):
    tiny = ["train.epochs=1", "data.limit_train=64", "data.limit_test=32", "model.channels=8"]
    config = ROOT / "configs" / "digits_masked_psn.yaml"
    assert _script().main(["--configs", str(config), "--set", *tiny, "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "| config | neuron | test accuracy (final / best) | time |",
        "|---|---|---|---|",
    ]
    assert re.fullmatch(
        r"\| `configs/digits_masked_psn.yaml` \| masked PSN k=16, ×8 λ ramp \| "
        r"\d+\.\d\d / \d+\.\d\d \| \d+ s \|",
        lines[2],
    ), lines[2]
    assert re.match(
        r"Measured on .+, \d+ CPUs usable, 1 PyTorch thread per run; spikingjelly-psn \S+, "
        r"spikingjelly \S+, torch \S+(; code at commit [\w-]+)?; 1-minute load average",
        lines[4],
    ), lines[4]
    assert (tmp_path / "digits_masked_psn" / "last.pt").is_file()


def test_neuron_column_matches_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    describe = _script().describe
    from spikingjelly_psn.train.config import load_config

    for path in sorted((ROOT / "configs").glob("digits_*.yaml")):
        neuron = load_config(path).to_dict()["neuron"]
        assert f"| `configs/{path.name}`" in readme
        assert f" | {describe(neuron)} | " in readme, path.name
