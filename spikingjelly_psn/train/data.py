"""Data sets and their time-major encoding.

Every data set yields ``(sample, label)``; :func:`to_time_major` turns a batch into the ``[T, N, *]``
tensor the spiking model reads. Layouts (``DataBundle.layout``):

- ``pixels``: ``[N, P]`` flattened image, one pixel per time-step -> ``[T=P, N, 1]``;
- ``columns``: ``[N, C, H, W]`` image, one column per time-step -> ``[T=W, N, C, H]``;
- ``static``: ``[N, C, H, W]`` image repeated ``T`` times -> ``[T, N, C, H, W]``;
- ``frames``: ``[N, T, *]`` neuromorphic frames -> ``[T, N, *]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from .config import Config, DataConfig
from .fake import FAKE_MARKER

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


@dataclass
class DataBundle:
    """Train and test sets plus what the model needs to know about them."""

    train: Dataset
    test: Dataset
    num_classes: int
    layout: str
    sample_shape: tuple[int, ...]


def to_time_major(x: torch.Tensor, layout: str, T: int) -> torch.Tensor:
    """Turn a batch into the ``[T, N, *]`` layout (see the module docstring)."""
    if layout == "pixels":
        return x.t().unsqueeze(-1).contiguous()
    if layout == "columns":
        return x.permute(3, 0, 1, 2).contiguous()
    if layout == "static":
        return x.unsqueeze(0).repeat(T, *([1] * x.dim()))
    if layout == "frames":
        return x.transpose(0, 1).contiguous()
    raise ValueError(f"unknown layout {layout!r}")


def steps_of(bundle: DataBundle, cfg: DataConfig) -> int:
    """Number of time-steps the model sees."""
    if bundle.layout == "pixels":
        return bundle.sample_shape[0]
    if bundle.layout == "columns":
        return bundle.sample_shape[-1]
    return cfg.T


def _spread(n_total: int, n: int | None) -> list[int] | None:
    """``n`` indices spread evenly over ``range(n_total)`` (keeps class mixture of sorted sets)."""
    if n is None or n >= n_total:
        return None
    return np.linspace(0, n_total - 1, n).round().astype(int).tolist()


def _limit(ds: Dataset, n: int | None) -> Dataset:
    idx = _spread(len(ds), n)
    return ds if idx is None else Subset(ds, idx)


def build_data(cfg: Config) -> DataBundle:
    """Build the train/test sets the config asks for (reading only local files)."""
    d = cfg.data
    if d.dataset == "digits":
        bundle = _digits(d)
    elif d.dataset in ("cifar10", "cifar100"):
        bundle = _cifar(d)
    elif d.dataset == "shd":
        bundle = _shd(d)
    else:
        bundle = _neuromorphic(d)
    bundle.train = _limit(bundle.train, d.limit_train)
    bundle.test = _limit(bundle.test, d.limit_test)
    return bundle


def _digits(d: DataConfig) -> DataBundle:
    """scikit-learn's 8x8 handwritten digits, one pixel per time-step, fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32) / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=d.test_fraction, stratify=y, random_state=0
    )
    train = TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr))
    test = TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te))
    return DataBundle(train, test, 10, "pixels", (x.shape[1],))


class _UncheckedCIFAR:
    """Mixin skipping torchvision's md5 check (only for generated fake data)."""

    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        import pickle

        with open(Path(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


def _cifar(d: DataConfig) -> DataBundle:
    """torchvision CIFAR10/100 from ``data.root`` (never downloads)."""
    import torchvision
    from torchvision import transforms as tf

    base = torchvision.datasets.CIFAR10 if d.dataset == "cifar10" else torchvision.datasets.CIFAR100
    if Path(d.root, FAKE_MARKER).exists():
        base = type(f"Fake{base.__name__}", (_UncheckedCIFAR, base), {})
    train_tf: list = []
    if d.random_crop:
        train_tf.append(tf.RandomCrop(32, padding=d.random_crop))
    if d.hflip:
        train_tf.append(tf.RandomHorizontalFlip())
    if d.trivial_augment:
        train_tf.append(tf.TrivialAugmentWide())
    tail: list = [tf.ToTensor()]
    if d.normalize:
        tail.append(tf.Normalize(CIFAR_MEAN[d.dataset], CIFAR_STD[d.dataset]))
    erase = [tf.RandomErasing(p=d.random_erasing)] if d.random_erasing > 0 else []
    train = base(d.root, train=True, download=False, transform=tf.Compose(train_tf + tail + erase))
    test = base(d.root, train=False, download=False, transform=tf.Compose(tail))
    classes = 10 if d.dataset == "cifar10" else 100
    layout = "columns" if d.mode == "sequential" else "static"
    return DataBundle(train, test, classes, layout, (3, 32, 32))


class FrameTransform:
    """Tensor transforms for ``[T, C, H, W]`` frames: resize, random crop, horizontal flip."""

    def __init__(self, resize: int | None, crop_pad: int, hflip: bool, train: bool) -> None:
        self.resize, self.crop_pad, self.hflip, self.train = resize, crop_pad, hflip, train

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(frames), dtype=torch.float32)
        if self.resize is not None and x.dim() == 4:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear")
        if self.train and x.dim() == 4:
            if self.crop_pad:
                h, w = x.shape[-2:]
                p = self.crop_pad
                x = F.pad(x, (p, p, p, p))
                i, j = torch.randint(0, 2 * p + 1, (2,)).tolist()
                x = x[..., i : i + h, j : j + w]
            if self.hflip and torch.rand(()) < 0.5:
                x = x.flip(-1)
        return x


def _natural_key(path: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", Path(path).name))


def _per_class_split(ds, test_fraction: float) -> tuple[list[int], list[int]]:
    """Fixed split: the first ``test_fraction`` of each class (natural file order) is test."""
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(ds.samples):
        by_class.setdefault(label, []).append(i)
    train, test = [], []
    for idx in by_class.values():
        idx.sort(key=lambda i: _natural_key(ds.samples[i][0]))
        n_test = max(1, round(len(idx) * test_fraction))
        test += idx[:n_test]
        train += idx[n_test:]
    return sorted(train), sorted(test)


class _TransformedSubset(Dataset):
    """A subset with its own transform (train and test views of one folder)."""

    def __init__(self, ds, indices: list[int], transform) -> None:
        self.ds, self.indices, self.transform = ds, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        path, label = self.ds.samples[self.indices[i]]
        return self.transform(self.ds.loader(path)), label


def _sj_kwargs(d: DataConfig) -> dict:
    return {"data_type": "frame", "frames_number": d.T, "split_by": d.split_by}


def _neuromorphic(d: DataConfig) -> DataBundle:
    """SpikingJelly's event data sets in frame mode, read from ``data.root``."""
    from spikingjelly.datasets import cifar10_dvs, dvs128_gesture, n_mnist

    train_tf = FrameTransform(d.resize, d.random_crop, d.hflip, train=True)
    test_tf = FrameTransform(d.resize, 0, False, train=False)
    if d.dataset == "cifar10dvs":
        full = cifar10_dvs.CIFAR10DVS(d.root, **_sj_kwargs(d))
        tr_idx, te_idx = _per_class_split(full, d.test_fraction)
        train = _TransformedSubset(full, tr_idx, train_tf)
        test = _TransformedSubset(full, te_idx, test_tf)
        classes = 10
    else:
        cls = {"dvs128gesture": dvs128_gesture.DVS128Gesture, "nmnist": n_mnist.NMNIST}[d.dataset]
        train = cls(d.root, train=True, transform=train_tf, **_sj_kwargs(d))
        test = cls(d.root, train=False, transform=test_tf, **_sj_kwargs(d))
        classes = 11 if d.dataset == "dvs128gesture" else 10
    x, _ = test[0]
    return DataBundle(train, test, classes, "frames", tuple(x.shape[1:]))


def _shd(d: DataConfig) -> DataBundle:
    """Spiking Heidelberg Digits, 700 input channels per time-step."""
    from spikingjelly.datasets import shd

    tf = FrameTransform(None, 0, False, train=False)
    train = shd.SpikingHeidelbergDigits(d.root, train=True, transform=tf, **_sj_kwargs(d))
    test = shd.SpikingHeidelbergDigits(d.root, train=False, transform=tf, **_sj_kwargs(d))
    return DataBundle(train, test, 20, "frames", (700,))
