"""scripts/threads_table.py, which regenerates the thread table of docs/training.md, runs."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "threads_table", ROOT / "scripts" / "threads_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_one_short_run_alone(capsys):
    tiny = ["data.limit_train=64", "data.limit_test=32", "model.channels=8"]
    args = ["--rounds", "1", "--epochs", "1", "--threads", "1", "--beside", "alone", "--set", *tiny]
    assert _script().main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["| PyTorch threads | alone |", "|---|---|"]
    assert re.fullmatch(r"\| 1 \| \d+\.\d s \|", lines[2]), lines[2]
    assert lines[4].startswith("1 round(s) of 1-epoch default runs on ")


def test_table_cells_are_medians_with_their_range():
    script = _script()
    times = {("alone", 1): [3.0, 1.0, 2.0], ("busy", 1): [9.0, 5.0, 7.0]}
    text = script.table(times, [1], ["alone", "busy"])
    assert text.splitlines()[2] == "| 1 | 2.0 s (1.0 to 3.0) | 7.0 s (5.0 to 9.0) |"
