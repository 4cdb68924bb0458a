"""The neurons under test: names, input shapes, and a factory for each (plugin and baselines)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from spikingjelly_psn import catalog
from spikingjelly_psn.ops import backends

PLUGIN_NEURONS: tuple[str, ...] = catalog.BENCH_NAMES
#: SpikingJelly's class of each plugin neuron that has one, timed as ``sj-<name>``.
SPIKINGJELLY_TWINS: dict[str, catalog.PluginNeuron] = {
    f"sj-{neuron.bench_name}": neuron for neuron in catalog.NEURONS if neuron.spikingjelly_twin
}
#: SpikingJelly's PSN timed a second time: its time over ``sj-psn`` measures the noise of a ratio.
CONTROL = "control"
BASELINES: tuple[str, ...] = (*SPIKINGJELLY_TWINS, "lif", CONTROL)
#: Whose time each row is divided by in ``time_vs_sj``: SpikingJelly's class of the same name.
TWINS: dict[str, str] = {
    **{neuron.bench_name: twin for twin, neuron in SPIKINGJELLY_TWINS.items()},
    CONTROL: "sj-psn",
}
NEURONS: tuple[str, ...] = PLUGIN_NEURONS + BASELINES
PLUGIN_BACKENDS: tuple[str, ...] = backends.names()
BASELINE_BACKEND = "spikingjelly"
MAX_SIDE = 32


class Unavailable(Exception):
    """A neuron or backend that cannot run here; the message says why."""


@dataclass(frozen=True)
class CaseSpec:
    """One neuron configuration; shape-independent except for ``T``."""

    neuron: str
    backend: str
    T: int
    k: int
    dilation: int
    channels: int
    mfpsn_threshold: str


@dataclass
class Case:
    """A built layer, the implementation that runs it, and the hyper-parameters it really uses."""

    module: nn.Module
    impl: str
    k: int | None
    dilation: int | None


def backends_for(neuron: str, backends: list[str]) -> list[str]:
    """Backends a neuron runs on: the chosen plugin backends, or SpikingJelly's own for baselines."""
    return list(backends) if neuron in PLUGIN_NEURONS else [BASELINE_BACKEND]


def mfpsn_shape(T: int, n_prime: int, channels: int) -> tuple[int, ...]:
    """``[T, B, C, H, W]`` with ``B·C·H·W = N'``: a conv-net feature map of ``channels`` channels.

    ``H = W`` is the largest power of two up to 32 that divides ``N' / C`` as a square; B takes
    the rest. With no square left (``H = W = 1``) the shape is ``[T, B, C]``.
    """
    if n_prime % channels:
        raise ValueError(f"N'={n_prime} is not a multiple of the MFPSN channel count {channels}")
    per_channel = n_prime // channels
    side = 1 << int(math.log2(MAX_SIDE))
    while side > 1 and per_channel % (side * side):
        side //= 2
    batch = per_channel // (side * side)
    if side == 1:
        return (T, batch, channels)
    return (T, batch, channels, side, side)


def input_shape(neuron: str, T: int, n_prime: int, channels: int) -> tuple[int, ...]:
    """``[T, N']``, or the feature-map layout of :func:`mfpsn_shape` for MFPSN."""
    plugin = catalog.by_bench_name(neuron)
    if plugin is not None and plugin.feature_map_input:
        return mfpsn_shape(T, n_prime, channels)
    return (T, n_prime)


def lif_implementation(device: torch.device) -> str:
    """The implementation SpikingJelly binds to a multi-step LIFNode on ``device``."""
    from spikingjelly.activation_based import functional

    try:
        return str(functional.neuron_implementation("lif", device)["implementation"])
    except (RuntimeError, ValueError) as exc:
        return f"unknown ({exc})"


def _plugin(plugin: catalog.PluginNeuron, kwargs: dict, backend: str) -> nn.Module:
    try:
        cls = plugin.cls()
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"spikingjelly_psn.{plugin.name}: {exc}") from exc
    try:
        return cls(**kwargs, backend=backend)
    except (ImportError, NotImplementedError) as exc:
        raise Unavailable(f"backend {backend!r}: {type(exc).__name__}: {exc}") from exc


def _baseline(spec: CaseSpec, device: torch.device) -> tuple[nn.Module, str, dict]:
    """SpikingJelly's twin of a plugin neuron (the control is PSN's again), or its LIF."""
    from spikingjelly.activation_based import neuron

    twin = SPIKINGJELLY_TWINS.get(TWINS[CONTROL] if spec.neuron == CONTROL else spec.neuron)
    if twin is None:
        return neuron.LIFNode(step_mode="m"), lif_implementation(device), {}
    kwargs = twin.bench_kwargs(spec)
    return getattr(neuron, twin.name)(**kwargs), "spikingjelly-torch", kwargs


def build(spec: CaseSpec, device: torch.device, dtype: torch.dtype) -> Case:
    """The layer of ``spec`` on ``device`` in ``dtype``; raises :class:`Unavailable` when it can't run.

    Each neuron is built with its catalog's bench arguments (masked PSN: ``min(k, T)`` and
    ``λ = 1``, the trained, causal state); the whole layer is cast to ``dtype``, as ``.half()``
    would do.
    """
    if spec.neuron not in NEURONS:
        raise ValueError(f"unknown neuron {spec.neuron!r}; choose from {', '.join(NEURONS)}")
    plugin = catalog.by_bench_name(spec.neuron)
    if plugin is not None:
        reason = backends.unavailable_reason(spec.backend, device)
        if reason is not None:
            raise Unavailable(reason)
        kwargs = plugin.bench_kwargs(spec)
        module, impl = _plugin(plugin, kwargs, spec.backend), spec.backend
    else:
        module, impl, kwargs = _baseline(spec, device)
    module = module.to(device=device, dtype=dtype)
    return Case(module, impl, kwargs.get("k"), kwargs.get("dilation"))
