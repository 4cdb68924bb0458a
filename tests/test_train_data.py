"""Data sets on generated trees (SpikingJelly's real dataset classes), layouts, losses."""

from __future__ import annotations

import pytest
import torch

from spikingjelly_psn.train.config import load_config, time_steps
from spikingjelly_psn.train.data import build_data, steps_of, to_time_major
from spikingjelly_psn.train.fake import make_fake_dataset
from spikingjelly_psn.train.loss import loss_fn, mix_batch


@pytest.mark.parametrize(
    ("dataset", "shape", "classes"),
    [
        ("cifar10dvs", (3, 2, 48, 48), 10),
        ("dvs128gesture", (3, 2, 128, 128), 11),
        ("nmnist", (3, 2, 34, 34), 10),
        ("shd", (3, 700), 20),
    ],
)
def test_neuromorphic_frames_from_fake_events(tmp_path, dataset, shape, classes):
    root = make_fake_dataset(dataset, tmp_path / dataset)
    resize = ["data.resize=48"] if dataset == "cifar10dvs" else []
    cfg = load_config(
        None,
        [f"data.dataset={dataset}", f"data.root={root}", "data.T=3", "data.split_by=time", *resize]
        + ["neuron.k=2"],
    )
    bundle = build_data(cfg)
    x, y = bundle.train[0]
    assert tuple(x.shape) == shape and x.dtype == torch.float32
    assert bundle.num_classes == classes and 0 <= int(y) < classes
    assert x.sum() > 0  # events were integrated into frames
    batch = torch.stack([x, bundle.test[0][0]])
    assert to_time_major(batch, bundle.layout, 3).shape == (3, 2, *shape[1:])
    assert (root / "frames_number_3_split_by_time").is_dir()
    assert time_steps(cfg.data) == steps_of(bundle, cfg.data) == 3


def test_cifar10dvs_split_is_per_class_and_disjoint(tmp_path):
    root = make_fake_dataset("cifar10dvs", tmp_path, per_class=5)
    cfg = load_config(
        None,
        ["data.dataset=cifar10dvs", f"data.root={root}", "data.T=2", "data.test_fraction=0.1"]
        + ["neuron.k=2"],
    )
    bundle = build_data(cfg)
    train, test = set(bundle.train.indices), set(bundle.test.indices)
    assert not train & test and len(train) + len(test) == 100 and len(test) == 10
    labels = sorted(bundle.test.ds.samples[i][1] for i in test)
    assert labels == list(range(10))
    names = {bundle.test.ds.samples[i][0].rsplit("/", 1)[-1] for i in test}
    assert all(n.endswith("_0.npz") for n in names)


@pytest.mark.parametrize(
    ("mode", "layout", "shape"),
    [("sequential", "columns", (32, 2, 3, 32)), ("static", "static", (4, 2, 3, 32, 32))],
)
def test_cifar_sequential_and_static(tmp_path, mode, layout, shape):
    root = make_fake_dataset("cifar10", tmp_path)
    cfg = load_config(
        None,
        [
            "data.dataset=cifar10",
            f"data.root={root}",
            f"data.mode={mode}",
            "data.T=4",
            "neuron.k=2",
            "data.trivial_augment=true",
            "data.hflip=true",
        ],
    )
    bundle = build_data(cfg)
    assert bundle.layout == layout and bundle.num_classes == 10
    x = torch.stack([bundle.train[0][0], bundle.train[1][0]])
    assert to_time_major(x, layout, steps_of(bundle, cfg.data)).shape == shape
    assert time_steps(cfg.data) == steps_of(bundle, cfg.data)  # what the config checks k against


def test_digits_split_is_fixed_and_stratified():
    cfg = load_config(None, [])
    a, b = build_data(cfg), build_data(load_config(None, ["seed=7"]))
    assert len(a.train) == 1437 and len(a.test) == 360
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    counts = torch.bincount(a.test.tensors[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    assert to_time_major(a.test.tensors[0][:5], "pixels", 64).shape == (64, 5, 1)
    assert time_steps(cfg.data) == steps_of(a, cfg.data) == 64


def test_mixing_and_tet_loss():
    o = load_config(
        None, ["optim.mixup_alpha=0.2", "optim.cutmix_alpha=1.0", "optim.loss=tet"]
    ).optim
    x, y = torch.rand(6, 3, 8, 8), torch.arange(6) % 3
    torch.manual_seed(0)
    xm, target = mix_batch(x, y, 3, o)
    assert xm.shape == x.shape and target.shape == (6, 3)
    assert torch.allclose(target.sum(1), torch.ones(6))
    out = torch.randn(4, 6, 3, requires_grad=True)
    tet = loss_fn(out, target, o, train=True)
    ce = loss_fn(out, target, o, train=False)
    assert tet.item() != ce.item()
    tet.backward()
    assert out.grad is not None and out.grad[0].abs().sum() > 0

