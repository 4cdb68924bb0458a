"""Networks: the papers' nets and SpikingJelly's model zoo, all multi-step and time-major.

Every model maps ``[T, N, *]`` to per-step logits ``[T, N, classes]``; the readout (mean over
time, or TET) lives in the loss.
"""

from __future__ import annotations

import importlib

from spikingjelly.activation_based import functional, layer
from torch import nn

from .config import Config, ConfigError
from .data import DataBundle
from .neurons import NeuronMaker


def _conv_bn_sn(conv, bn, maker: NeuronMaker) -> list[nn.Module]:
    return [conv, bn, maker()]


class SeqMLP(nn.Sequential):
    """``{FC-BN-SN}*layers - FC``: per-step features ``[T, N, F]`` (digits pixels, SHD bins)."""

    def __init__(self, in_features: int, classes: int, channels: int, layers: int, maker) -> None:
        mods: list[nn.Module] = []
        for i in range(layers):
            cin = in_features if i == 0 else channels
            mods += _conv_bn_sn(
                layer.Linear(cin, channels, bias=False), layer.BatchNorm1d(channels), maker
            )
        super().__init__(*mods, layer.Linear(channels, classes))


def _two_conv_stages(conv, norm, pool, cin: int, channels: int, maker) -> list[nn.Module]:
    """``{{c<channels>k3s1-BN-SN}*3-APk2s2}*2``, the feature stages of the PSN paper's nets."""
    mods: list[nn.Module] = []
    for _ in range(2):
        for _ in range(3):
            mods += _conv_bn_sn(
                conv(cin, channels, 3, padding=1, bias=False), norm(channels), maker
            )
            cin = channels
        mods.append(pool(2))
    return mods


class SeqCIFARNet(nn.Sequential):
    """The PSN paper's sequential-CIFAR net: ``{{c128k3s1-BN-SN}*3-APk2s2}*2-FC256-SN-FC``.

    Input ``[T=32, N, 3, 32]``: one image column per step, Conv1d over the column.
    """

    def __init__(self, classes: int, channels: int, hidden: int, maker, in_channels: int = 3):
        mods = _two_conv_stages(
            layer.Conv1d, layer.BatchNorm1d, layer.AvgPool1d, in_channels, channels, maker
        )
        mods += [layer.Flatten(), layer.Linear(channels * 8, hidden), maker()]
        super().__init__(*mods, layer.Linear(hidden, classes))


class CIFAR10CSNN(nn.Sequential):
    """The PSN paper's CIFAR10 net: ``{{c256k3-BN-SN}*3-AP2}*2-FC4096-SN-FC10`` on 32x32 input."""

    def __init__(self, classes: int, channels: int, hidden: int, maker, in_channels: int = 3):
        mods = _two_conv_stages(
            layer.Conv2d, layer.BatchNorm2d, layer.AvgPool2d, in_channels, channels, maker
        )
        mods += [layer.Flatten(), layer.Linear(channels * 8 * 8, hidden), maker()]
        super().__init__(*mods, layer.Linear(hidden, classes))


class CIFAR10DVSVGG(nn.Sequential):
    """The VGGSNN of TEBN used by the PSN paper on CIFAR10-DVS (48x48 input, 2 polarities).

    ``64, 128, AP, 256, 256, AP, 512, 512, AP, 512, 512, AP``, conv with bias + BN + SN, then
    dropout and one FC. ``channels`` scales the widths (64 gives the paper's net).
    """

    def __init__(self, classes: int, channels: int, maker, in_channels: int, size: int, p: float):
        c = channels
        plan = [c, 2 * c, "A", 4 * c, 4 * c, "A", 8 * c, 8 * c, "A", 8 * c, 8 * c, "A"]
        mods: list[nn.Module] = []
        cin = in_channels
        for v in plan:
            if v == "A":
                mods.append(layer.AvgPool2d(2))
                size //= 2
                continue
            mods += _conv_bn_sn(layer.Conv2d(cin, v, 3, padding=1), layer.BatchNorm2d(v), maker)
            cin = v
        mods += [layer.Flatten(), layer.Dropout(p), layer.Linear(cin * size * size, classes)]
        super().__init__(*mods)


class _InputAdapter(nn.Sequential):
    """1x1 conv so a 3-channel zoo net reads 2-polarity event frames."""


def build_model(cfg: Config, bundle: DataBundle, T: int) -> nn.Module:
    """Build the configured model in multi-step mode."""
    m = cfg.model
    maker = NeuronMaker(cfg.neuron, T)
    shape = bundle.sample_shape
    classes = bundle.num_classes
    if m.name == "seq_mlp":
        if len(shape) != 1 and bundle.layout != "pixels":
            raise ConfigError(f"model.name=seq_mlp needs per-step feature vectors, not {shape}")
        in_features = 1 if bundle.layout == "pixels" else shape[0]
        net: nn.Module = SeqMLP(in_features, classes, m.channels, m.layers, maker)
    elif m.name == "seq_cifar_net":
        if bundle.layout != "columns":
            raise ConfigError("model.name=seq_cifar_net needs data.mode=sequential CIFAR")
        net = SeqCIFARNet(classes, m.channels, m.hidden, maker, shape[0])
    elif m.name == "cifar10_csnn":
        _need_image(m.name, shape, 32)
        net = CIFAR10CSNN(classes, m.channels, m.hidden, maker, shape[0])
    elif m.name == "cifar10dvs_vgg":
        _need_image(m.name, shape, None)
        net = CIFAR10DVSVGG(classes, m.channels, maker, shape[0], shape[-1], m.dropout)
    else:
        net = _zoo(cfg, shape, classes, T, maker)
    functional.set_step_mode(net, "m")
    return net


def _need_image(name: str, shape: tuple, size: int | None) -> None:
    if len(shape) != 3 or (size is not None and shape[-1] != size):
        raise ConfigError(
            f"model.name={name} needs image-like input [C, H, W]"
            + (f" of size {size}" if size else "")
            + f", the data gives {list(shape)}; pick a matching data set or model"
        )


def _zoo(cfg: Config, shape: tuple, classes: int, T: int, maker: NeuronMaker) -> nn.Module:
    """A SpikingJelly zoo builder ``module.function`` with ``spiking_neuron=`` our neuron."""
    module_name, _, fn_name = cfg.model.name.partition(".")
    module = importlib.import_module(f"spikingjelly.activation_based.model.{module_name}")
    builder = getattr(module, fn_name, None) if fn_name else None
    if builder is None:
        names = [n for n in getattr(module, "__all__", dir(module)) if not n.startswith("_")]
        raise ConfigError(
            f"model.name: '{cfg.model.name}' is not in SpikingJelly's {module_name}; "
            f"choose one of {', '.join(f'{module_name}.{n}' for n in names)}"
        )
    _need_image(cfg.model.name, shape, None)
    kwargs = dict(cfg.model.kwargs)
    if module_name == "parametric_lif_net":
        kwargs.setdefault("channels", cfg.model.channels)
    elif module_name == "spikformer":
        kwargs.setdefault("T", T)
        kwargs.setdefault("in_channels", shape[0])
        kwargs.setdefault("img_size_h", shape[1])
        kwargs.setdefault("img_size_w", shape[2])
        kwargs.setdefault("num_classes", classes)
    else:
        kwargs.setdefault("num_classes", classes)
        if module_name == "sew_resnet":
            kwargs.setdefault("cnf", "ADD")
    try:
        net = builder(spiking_neuron=maker, **kwargs)
    except TypeError as err:
        raise ConfigError(f"model.kwargs: {cfg.model.name} rejected its arguments: {err}") from None
    if module_name in ("spiking_resnet", "sew_resnet", "spiking_vgg") and shape[0] != 3:
        net = _InputAdapter(layer.Conv2d(shape[0], 3, 1), net)
    return net
