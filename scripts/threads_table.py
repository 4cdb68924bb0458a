"""Time the default digits run per PyTorch thread count, alone and beside a busy process.

    python scripts/threads_table.py                      # 5 rounds, 3 epochs, threads 1 and 2
    python scripts/threads_table.py --rounds 3 --threads 1,2,4

Each round runs every (neighbour, thread count) once, in turn, so a change in the machine's load
falls on every cell alike; "beside a busy process" starts ``python -c "while True: pass"`` for the
runs of that cell. A time is the whole ``python -m spikingjelly_psn.train`` command. Prints the
table of docs/training.md ("CPU threads and data loading"): medians with their range.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this clone's package, which the runs below use too
sys.path.insert(0, str(ROOT / "scripts"))
from train_command import timed_train  # noqa: E402

NEIGHBOURS = {"alone": False, "busy": True}


@contextmanager
def neighbour(busy: bool) -> Iterator[None]:
    """A process spinning on one core while the block runs (nothing when ``busy`` is false)."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # let it reach the scheduler first
        yield
    finally:
        spinner.kill()
        spinner.wait()


def timed_run(threads: int, epochs: int, overrides: list[str]) -> float:
    """Wall time of one default training command, in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        return timed_train(
            ["--epochs", str(epochs)], threads, Path(tmp) / "run", overrides, "the run"
        )


def cell(times: list[float]) -> str:
    """``14.6 s (12.6 to 16.9)``: the median and the range."""
    median = statistics.median(times)
    if len(times) == 1:
        return f"{median:.1f} s"
    return f"{median:.1f} s ({min(times):.1f} to {max(times):.1f})"


def table(times: dict[tuple[str, int], list[float]], threads: list[int], nbrs: list[str]) -> str:
    """Rows: thread counts; columns: alone, beside a busy process."""
    heads = {"alone": "alone", "busy": 'beside one busy process (`python -c "while True: pass"`)'}
    lines = [
        "| PyTorch threads | " + " | ".join(heads[n] for n in nbrs) + " |",
        "|---|" + "---|" * len(nbrs),
    ]
    for t in threads:
        lines.append(f"| {t} | " + " | ".join(cell(times[n, t]) for n in nbrs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs per cell (default 5)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--beside", default="alone,busy", help="alone, busy or both (default)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    nbrs = [n for n in args.beside.split(",") if n in NEIGHBOURS]
    times: dict[tuple[str, int], list[float]] = {(n, t): [] for n in nbrs for t in threads}
    loads = []
    for _ in range(args.rounds):
        for n in nbrs:
            with neighbour(NEIGHBOURS[n]):
                for t in threads:
                    loads.append(os.getloadavg()[0])
                    times[n, t].append(timed_run(t, args.epochs, args.overrides))
    from spikingjelly_psn.cli import version_text
    from spikingjelly_psn.devices import cpu_name
    from spikingjelly_psn.train.machine import usable_cpus

    print(table(times, threads, nbrs))
    print()
    print(
        f"{args.rounds} round(s) of {args.epochs}-epoch default runs on {cpu_name()}, "
        f"{usable_cpus()} CPUs usable; {version_text()}; 1-minute load average "
        f"{min(loads):.1f} to {max(loads):.1f} (median {statistics.median(loads):.1f})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
