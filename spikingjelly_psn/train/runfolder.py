"""One run per run folder: create it, lock it while a run uses it, clear what a kill left behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .checkpoint import remove_temp_files
from .config import ConfigError

LOCK_NAME = ".lock"


@contextmanager
def claim(folder: Path, new_run: bool) -> Iterator[list[Path]]:
    """Hold ``folder`` for this process; yields the stale temporary files it removed.

    Refuses a folder another run holds (the operating system drops the lock when a process
    dies, even by ``kill -9``), a folder that cannot be written, and, for a new run, a folder
    that already holds a run.
    """
    lock = FileLock(folder / LOCK_NAME, timeout=0)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"run folder {folder} is in use by another run; wait for it to finish "
            f"or pass another --out"
        ) from None
    except OSError as err:
        raise ConfigError(
            f"cannot write to the run folder {folder} ({err.strerror}); "
            f"pass a writable folder with --out"
        ) from None
    try:
        if new_run and (folder / "last.pt").exists():
            raise ConfigError(
                f"--out {folder} already holds a run; use --resume {folder} or a new --out"
            )
        yield remove_temp_files(folder)
    finally:
        lock.release()
