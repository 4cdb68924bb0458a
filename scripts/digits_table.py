"""Train every digits recipe and print the README's table of accuracies and times, with the machine.

    python scripts/digits_table.py                 # the five configs/digits_*.yaml, 1 CPU thread
    python scripts/digits_table.py --threads 2     # the same with two PyTorch threads per run
    python scripts/digits_table.py --configs configs/digits_psn.yaml --set train.epochs=5

Each recipe runs as its own command, ``python -m spikingjelly_psn.train --config FILE``, one after
the other, so a time is the whole command's, start-up included, as a user sees it. The run
folders go to ``runs/digits-table-STAMP/``. The accuracies depend on the seed, the PyTorch thread
count, the CPU and the library versions (docs/training.md, "Reproducibility"); the line under the
table records them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this clone's package, which the runs below use too
sys.path.insert(0, str(ROOT / "scripts"))
from train_command import timed_train  # noqa: E402

DEFAULT_CONFIG = "digits_mfpsn.yaml"


@dataclass
class Result:
    """One recipe's run: its config file, final and best test accuracy (%), wall time (s)."""

    config: Path
    neuron: str
    final: float
    best: float
    seconds: float


def describe(neuron: dict) -> str:
    """The neuron column of the README's table, from a run's resolved ``neuron`` settings."""
    name, k = neuron["name"], neuron["k"]
    if name == "MFPSN":
        return f"MFPSN k={k}, {neuron['dilations']} dilations"
    if name == "MaskedPSN":
        ramp = "×8 λ ramp" if neuron["lambda_schedule"] == "paper" else "linear λ ramp"
        return f"masked PSN k={k}, {ramp}"
    if name == "SlidingPSN":
        return f"sliding PSN k={k}"
    if name == "LIFNode":
        return f"SpikingJelly LIF (τ = {neuron['tau']:g})"
    return name


def train(config: Path, out: Path, threads: int, overrides: list[str]) -> Result:
    """Run one recipe as its own command and read back its metrics."""
    import yaml

    seconds = timed_train(["--config", str(config)], threads, out, overrides, config.name)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    neuron = yaml.safe_load((out / "config.yaml").read_text())["neuron"]
    accuracies = [r["test_acc"] for r in rows]
    return Result(config, describe(neuron), accuracies[-1], max(accuracies), seconds)


def table(results: list[Result]) -> str:
    """The README's markdown table."""
    lines = [
        "| config | neuron | test accuracy (final / best) | time |",
        "|---|---|---|---|",
    ]
    for r in results:
        name = f"`configs/{r.config.name}`" + (
            " (default)" if r.config.name == DEFAULT_CONFIG else ""
        )
        lines.append(f"| {name} | {r.neuron} | {r.final:.2f} / {r.best:.2f} | {r.seconds:.0f} s |")
    return "\n".join(lines)


def machine(threads: int, load_before: float) -> str:
    """The line that says where the table comes from."""
    from spikingjelly_psn.cli import version_text
    from spikingjelly_psn.devices import cpu_name
    from spikingjelly_psn.train.machine import usable_cpus

    return (
        f"Measured on {cpu_name()}, {usable_cpus()} CPUs usable, {threads} PyTorch "
        f"thread{'s' if threads != 1 else ''} per run; {version_text()}{_commit()}; "
        f"1-minute load average {load_before:.1f} before the runs, {os.getloadavg()[0]:.1f} after."
    )


def _commit() -> str:
    """``; code at commit abc1234`` of this clone (``-dirty`` with local changes), or nothing."""
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return f"; code at commit {proc.stdout.strip()}" if proc.returncode == 0 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        type=Path,
        default=[
            ROOT / "configs" / f"digits_{n}.yaml"
            for n in ("mfpsn", "psn", "masked_psn", "sliding_psn", "lif")
        ],
        help="recipes to run (default: the five digits recipes)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="PyTorch threads per run (default 1)"
    )
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--out", type=Path, help="folder of the runs (default runs/digits-table-STAMP)"
    )
    args = parser.parse_args(argv)
    out = args.out or ROOT / "runs" / f"digits-table-{time.strftime('%Y%m%d-%H%M%S')}"
    load_before = os.getloadavg()[0]
    results = [
        train(config.resolve(), out / config.stem, args.threads, args.overrides)
        for config in args.configs
    ]
    print(table(results))
    print()
    print(machine(args.threads, load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
