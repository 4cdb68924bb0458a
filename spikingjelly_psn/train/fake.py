"""Tiny generated data sets laid out as the real ones on disk, for dry runs and tests.

Neuromorphic sets get an ``events_np`` tree of ``.npz`` files with ``t, x, y, p`` (SHD: an
``events_h5`` pair of HDF5 files), which SpikingJelly's own dataset classes then read and integrate
into frames; CIFAR gets a ``cifar-10-batches-py`` / ``cifar-100-python`` pickle set. Nothing here
touches the network.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

FAKE_MARKER = ".fake"

_SENSOR = {"cifar10dvs": (128, 128), "dvs128gesture": (128, 128), "nmnist": (34, 34)}
_CLASSES = {"cifar10dvs": 10, "dvs128gesture": 11, "nmnist": 10, "shd": 20}
_CIFAR10DVS_NAMES = (
    "airplane automobile bird cat deer dog frog horse ship truck".split()  # noqa: SIM905
)


def _events(rng: np.random.Generator, h: int, w: int, n: int = 400) -> dict[str, np.ndarray]:
    return {
        "t": np.sort(rng.integers(0, 100_000, n)).astype(np.int64),
        "x": rng.integers(0, w, n).astype(np.uint16),
        "y": rng.integers(0, h, n).astype(np.uint16),
        "p": rng.integers(0, 2, n).astype(np.uint8),
    }


def make_fake_dataset(dataset: str, root: str | Path, per_class: int = 2, seed: int = 0) -> Path:
    """Write a tiny ``dataset`` tree under ``root`` and return ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if dataset in ("cifar10", "cifar100"):
        _fake_cifar(dataset, root, per_class, rng)
    elif dataset == "shd":
        _fake_shd(root, per_class, rng)
    elif dataset == "cifar10dvs":
        h, w = _SENSOR[dataset]
        for name in _CIFAR10DVS_NAMES:
            folder = root / "events_np" / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class * 2):
                np.savez(folder / f"cifar10_{name}_{i}.npz", **_events(rng, h, w))
    elif dataset in _SENSOR:
        h, w = _SENSOR[dataset]
        for split in ("train", "test"):
            for label in range(_CLASSES[dataset]):
                folder = root / "events_np" / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    np.savez(folder / f"{i}.npz", **_events(rng, h, w))
    else:
        raise ValueError(f"no fake data for {dataset!r}")
    (root / FAKE_MARKER).write_text("generated fake data\n")
    return root


def _fake_cifar(dataset: str, root: Path, per_class: int, rng: np.random.Generator) -> None:
    classes = 10 if dataset == "cifar10" else 100
    label_key = "labels" if dataset == "cifar10" else "fine_labels"
    folder = root / ("cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int) -> dict:
        labels = [i % classes for i in range(n)]
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        return {"data": data, label_key: labels, "coarse_labels": [0] * n}

    n = classes * per_class
    if dataset == "cifar10":
        for i in range(1, 6):
            _pickle(folder / f"data_batch_{i}", batch(max(classes, n // 5)))
        _pickle(folder / "test_batch", batch(n))
        _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(classes)]})
    else:
        _pickle(folder / "train", batch(n))
        _pickle(folder / "test", batch(n))
        _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(classes)]})


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _fake_shd(root: Path, per_class: int, rng: np.random.Generator) -> None:
    import h5py

    folder = root / "events_h5"
    folder.mkdir(parents=True, exist_ok=True)
    n = _CLASSES["shd"] * per_class
    for split in ("train", "test"):
        with h5py.File(folder / f"shd_{split}.h5", "w") as f:
            vf = h5py.vlen_dtype(np.float32)
            vu = h5py.vlen_dtype(np.uint16)
            times = f.create_dataset("spikes/times", (n,), dtype=vf)
            units = f.create_dataset("spikes/units", (n,), dtype=vu)
            for i in range(n):
                times[i] = np.sort(rng.random(300).astype(np.float32))
                units[i] = rng.integers(0, 700, 300).astype(np.uint16)
            f.create_dataset("labels", data=np.arange(n) % _CLASSES["shd"])
