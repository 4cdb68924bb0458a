"""The plugin neurons inside SpikingJelly's model zoo, passed through ``spiking_neuron=``.

Each case builds a real zoo model around one plugin class, switches it to multi-step mode as the
SpikingJelly scripts do, and trains two steps (forward, loss, backward, optimizer step,
``functional.reset_net``). Every class runs in at least three models and every model with at
least two classes; the ResNets and VGG run with T=2 and one small image to stay fast on a CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, surrogate
from spikingjelly.activation_based.model import (
    parametric_lif_net,
    sew_resnet,
    spikformer,
    spiking_resnet,
    spiking_vgg,
)
from torch import nn

import spikingjelly_psn
from spikingjelly_psn import MFPSN, PSN, MaskedPSN, SlidingPSN
from spikingjelly_psn.neuron import common

NUM_CLASSES = 3


def neuron_kwargs(cls: type, T: int) -> dict:
    """The constructor arguments each class needs besides SpikingJelly's own."""
    return {
        PSN: {"T": T},
        MaskedPSN: {"k": 2, "T": T},
        SlidingPSN: {"k": 2},
        MFPSN: {"k": 2},
    }[cls]


def build_spiking_resnet18(cls: type) -> tuple[nn.Module, torch.Tensor]:
    net = spiking_resnet.spiking_resnet18(
        spiking_neuron=cls, num_classes=NUM_CLASSES, **neuron_kwargs(cls, 2)
    )
    return net, torch.rand(2, 2, 3, 16, 16)


def build_sew_resnet18(cls: type) -> tuple[nn.Module, torch.Tensor]:
    net = sew_resnet.sew_resnet18(
        spiking_neuron=cls, cnf="ADD", num_classes=NUM_CLASSES, **neuron_kwargs(cls, 2)
    )
    return net, torch.rand(2, 2, 3, 16, 16)


def build_spiking_vgg11_bn(cls: type) -> tuple[nn.Module, torch.Tensor]:
    """The 120M weights of the classifier's linear layers are frozen: their update is slow."""
    net = spiking_vgg.spiking_vgg11_bn(
        spiking_neuron=cls, num_classes=NUM_CLASSES, **neuron_kwargs(cls, 2)
    )
    for m in net.classifier:
        if isinstance(m, nn.Linear):
            m.requires_grad_(False)
    return net, torch.rand(2, 2, 3, 32, 32)


def build_dvs_gesture_net(cls: type, surrogate_function=None) -> tuple[nn.Module, torch.Tensor]:
    """The kwargs of SpikingJelly's ``classify_dvsg.py``, reset-only ``detach_reset`` included."""
    net = parametric_lif_net.DVSGestureNet(
        channels=4,
        spiking_neuron=cls,
        surrogate_function=surrogate_function or surrogate.ATan(),
        detach_reset=True,
        **neuron_kwargs(cls, 4),
    )
    return net, (torch.rand(4, 2, 2, 128, 128) > 0.8).float()


def build_spikformer(cls: type) -> tuple[nn.Module, torch.Tensor]:
    """Spikformer consumes ``T`` and adds ``step_mode='m'``: neuron kwargs go in a partial."""
    net = spikformer.Spikformer(
        T=4,
        img_size_h=32,
        img_size_w=32,
        embed_dims=32,
        num_heads=2,
        depths=1,
        num_classes=NUM_CLASSES,
        spiking_neuron=functools.partial(cls, **neuron_kwargs(cls, 4)),
    )
    return net, torch.rand(4, 2, 3, 32, 32)


Builder = Callable[[type], tuple[nn.Module, torch.Tensor]]

CASES: list[tuple[Builder, type]] = [
    (build_spiking_resnet18, PSN),
    (build_spiking_resnet18, MFPSN),
    (build_sew_resnet18, MaskedPSN),
    (build_sew_resnet18, SlidingPSN),
    (build_spiking_vgg11_bn, PSN),
    (build_spiking_vgg11_bn, SlidingPSN),
    *[(build_dvs_gesture_net, cls) for cls in (PSN, MaskedPSN, SlidingPSN, MFPSN)],
    *[(build_spikformer, cls) for cls in (PSN, MaskedPSN, SlidingPSN, MFPSN)],
]


def case_id(case: tuple[Builder, type]) -> str:
    builder, cls = case
    return f"{builder.__name__.removeprefix('build_')}-{cls.__name__}"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def fresh_reset_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reset-kwargs warning is issued once per class and process: forget earlier ones."""
    monkeypatch.setattr(common, "_warned_reset_kwargs", set())


def neuron_parameters(net: nn.Module, cls: type) -> list[nn.Parameter]:
    params = [p for m in net.modules() if isinstance(m, cls) for p in m.parameters()]
    assert params, f"no {cls.__name__} in the model"
    return params


def build(builder: Builder, cls: type) -> tuple[nn.Module, torch.Tensor]:
    """Build, set multi-step mode as SpikingJelly's scripts do, and materialise lazy MFPSNs."""
    net, x = builder(cls)
    functional.set_step_mode(net, "m")
    if cls is MFPSN:
        spikingjelly_psn.materialize(net, x)
    return net, x


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.filterwarnings("ignore:.*has no reset.*:UserWarning")
def test_zoo_model_trains_two_steps(case: tuple[Builder, type]) -> None:
    builder, cls = case
    net, x = build(builder, cls)
    neurons = [m for m in net.modules() if isinstance(m, cls)]
    assert neurons and all(m.step_mode == "m" for m in neurons)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    batch = x.shape[1] if x.dim() == 5 else x.shape[0]
    for _ in range(2):
        before = [[p.detach().clone() for p in m.parameters()] for m in neurons]
        out = net(x)
        assert out.dim() == 3 and out.shape[1] == batch
        target = torch.randint(out.shape[-1], (batch,))
        loss = F.cross_entropy(out.mean(0), target)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        for p in neuron_parameters(net, cls):
            assert p.grad is not None and torch.isfinite(p.grad).all()
        optimizer.step()
        functional.reset_net(net)
        for m, old in zip(neurons, before):
            changed = [not torch.equal(p, q) for p, q in zip(m.parameters(), old)]
            assert any(changed), f"no parameter of {m!r} changed"


@pytest.mark.parametrize("cls", [PSN, MaskedPSN, SlidingPSN, MFPSN])
def test_dvsgesture_script_kwargs_warn_not_fail(cls: type, fresh_reset_warning: None) -> None:
    with pytest.warns(UserWarning, match="has no reset.*detach_reset"):
        net, x = build(build_dvs_gesture_net, cls)
    with torch.no_grad():
        assert net(x).shape == (4, 2, 11)


@pytest.mark.filterwarnings("ignore:.*has no reset.*:UserWarning")
def test_set_step_mode_single_rejected_by_psn() -> None:
    net, _ = build(build_dvs_gesture_net, PSN)
    with pytest.raises(ValueError, match=r"PSN does not support step_mode='s'.*MaskedPSN"):
        functional.set_step_mode(net, "s")


def causal_dvs_gesture_net(cls: type) -> tuple[nn.Module, torch.Tensor]:
    """A DVSGestureNet whose neurons can run step by step; smooth outputs to compare closely."""
    net, x = build_dvs_gesture_net(cls, surrogate.ATan(spiking=False))
    functional.set_step_mode(net, "m")
    if cls is MaskedPSN:
        for m in net.modules():
            if isinstance(m, MaskedPSN):
                m.lambda_ = 1.0
    if cls is MFPSN:
        spikingjelly_psn.materialize(net, x)
    return net.eval(), x


@pytest.mark.parametrize("cls", [MaskedPSN, SlidingPSN, MFPSN])
@pytest.mark.filterwarnings("ignore:.*has no reset.*:UserWarning")
def test_single_step_loop_equals_multi_step(cls: type) -> None:
    net, x = causal_dvs_gesture_net(cls)
    with torch.no_grad():
        multi = net(x)
        functional.reset_net(net)
        functional.set_step_mode(net, "s")
        neurons = [m for m in net.modules() if isinstance(m, cls)]
        assert len(neurons) == 7 and all(m.step_mode == "s" for m in neurons)
        single = torch.stack([net(x_t) for x_t in x])
    functional.reset_net(net)
    torch.testing.assert_close(single, multi, rtol=1e-5, atol=1e-5)
