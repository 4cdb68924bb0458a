"""One ``python -m spikingjelly_psn.train`` command, run and timed as the table scripts need it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_train(args: list[str], threads: int, out: Path, overrides: list[str], what: str) -> float:
    """Wall time in seconds of the training command with ``args``; exits with its stderr on failure.

    The whole command is timed, start-up included, as a user sees it.
    """
    command = [sys.executable, "-m", "spikingjelly_psn.train", *args]
    command += ["--threads", str(threads), "--out", str(out)]
    if overrides:
        command += ["--set", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds
