"""Checkpoints: atomic writes, safe and checked loads, and the random state a bit-exact resume needs.

A checkpoint holds tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)``: a file received from someone else cannot run code when loaded.
``torch.save`` writes a zip archive with a CRC-32 per record; ``torch.load`` does not check them,
:func:`verify` does, so a truncated or damaged file is named before anything reads it.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from .config import ConfigError

# What ``Trainer.state`` writes and ``Trainer.load_state`` reads.
REQUIRED_KEYS = (
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "rng",
    "best_acc",
    "best_epoch",
    "history",
)
# Accuracies are percentages; checkpoints without this mark hold fractions (see :func:`load`).
ACC_UNIT = "percent"
# Files of a run folder written through a temporary file (see :func:`write_atomic`).
ATOMIC_NAMES = ("last.pt", "best.pt", "config.yaml")


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file (``mkstemp`` makes it private)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


NEW_FILE_MODE = _new_file_mode()


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used: missing, damaged, unsafe or not a training state.

    A :class:`ConfigError`: a ``--resume`` folder is input, reported as bad input is.
    """


def rng_state() -> dict[str, Any]:
    """Every generator a training epoch draws from (Python, NumPy, torch CPU and CUDA).

    Stored as tensors and plain values, which ``torch.load(weights_only=True)`` accepts.
    """
    version, words, gauss_next = random.getstate()
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": str(bit_generator),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
    np.random.set_state(
        (
            npy["bit_generator"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file in the same folder, then rename it over ``path``.

    A crash mid-write leaves the previous file intact (and a ``.NAME.*.tmp`` file that
    :func:`remove_temp_files` deletes on the next start). An ``OSError`` names ``path``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, NEW_FILE_MODE)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(path)
        raise


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`write_atomic`."""
    write_atomic(path, lambda f: torch.save(obj, f))


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files an interrupted :func:`write_atomic` left in ``folder``."""
    stale = sorted(p for name in ATOMIC_NAMES for p in folder.glob(f".{name}.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def verify(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete archive whose CRCs all match."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read ({err.strerror})") from None
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read ({err.strerror})") from None
    except Exception:  # zipfile raises several types on garbage; all mean the same here
        raise CheckpointError(
            f"{path} is truncated or not a checkpoint ({size} bytes, no complete archive)"
        ) from None
    if bad is not None:
        raise CheckpointError(f"{path} is damaged: its record '{bad}' fails the CRC-32 check")


def load(path: str | Path) -> dict[str, Any]:
    """Verify, then load a training checkpoint onto the CPU with ``weights_only=True``."""
    path = Path(path)
    verify(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} was not loaded: it holds Python objects other than tensors and plain "
            f"values{what}, which could run code; load only checkpoints written by "
            f"spikingjelly-psn train"
        ) from None
    except Exception as err:  # a structurally valid archive whose content torch cannot read
        raise CheckpointError(f"{path} is damaged: {_first_line(err)}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a training checkpoint of spikingjelly-psn train "
            f"(no '{missing[0]}' entry)"
        )
    return _accuracy_in_percent(state)


def _accuracy_in_percent(state: dict[str, Any]) -> dict[str, Any]:
    """Convert the fractions of a checkpoint written before accuracies were percentages."""
    if state.get("acc_unit") == ACC_UNIT:
        return state
    if state["best_acc"] >= 0:
        state["best_acc"] = 100 * state["best_acc"]
    for row in state["history"]:
        for key in ("train_acc", "test_acc"):
            if key in row:
                row[key] = 100 * row[key]
    state["acc_unit"] = ACC_UNIT
    return state


def load_for_resume(run: Path) -> tuple[dict[str, Any], str | None]:
    """The state to resume ``run`` from, and a warning when it is not ``last.pt``.

    A damaged or unsafe ``last.pt`` falls back to ``best.pt`` (a full state of an earlier epoch,
    from which the run continues exactly); without an intact ``best.pt`` the error says what to do.
    """
    last, best = run / "last.pt", run / "best.pt"
    try:
        return load(last), None
    except CheckpointError as err:
        damaged = str(err)
    if not best.exists():
        raise CheckpointError(
            f"{damaged}; there is no best.pt to fall back on: restore {last} from a backup, "
            f"or start a new run with another --out"
        )
    try:
        state = load(best)
    except CheckpointError as err:
        raise CheckpointError(
            f"{damaged}; the fallback failed too: {err}; restore {last} from a backup, "
            f"or start a new run with another --out"
        ) from None
    warning = (
        f"warning: {damaged}; resuming from {best} (epoch {state['epoch'] + 1}) instead, "
        f"the later epochs run again"
    )
    return state, warning


def repair_best(run: Path, state: dict[str, Any]) -> bool:
    """Write ``state`` to ``best.pt`` when it is the best epoch and ``best.pt`` does not hold it.

    That happens when a run is killed between its ``last.pt`` and ``best.pt`` writes; without
    the repair the summary would name a best epoch whose weights are not in ``best.pt``.
    """
    if state.get("best_epoch") != state["epoch"] + 1:
        return False
    try:
        if load(run / "best.pt")["epoch"] == state["epoch"]:
            return False
    except CheckpointError:
        pass
    save_atomic(state, run / "best.pt")
    return True


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
