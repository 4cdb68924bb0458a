"""The neurons under test: names, input shapes, and a factory for each (plugin and baselines)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from spikingjelly_psn.ops import backends

PLUGIN_NEURONS: tuple[str, ...] = ("psn", "masked", "sliding", "mfpsn")
BASELINES: tuple[str, ...] = ("sj-psn", "sj-masked", "sj-sliding", "lif", "control")
#: SpikingJelly's PSN timed a second time: its time over ``sj-psn`` measures the noise of a ratio.
CONTROL = "control"
#: Whose time each row is divided by in ``time_vs_sj``: SpikingJelly's class of the same name.
TWINS: dict[str, str] = {
    "psn": "sj-psn",
    "masked": "sj-masked",
    "sliding": "sj-sliding",
    CONTROL: "sj-psn",
}
NEURONS: tuple[str, ...] = PLUGIN_NEURONS + BASELINES
PLUGIN_BACKENDS: tuple[str, ...] = backends.names()
BASELINE_BACKEND = "spikingjelly"
MAX_SIDE = 32

_PLUGIN_CLASSES = {"psn": "PSN", "masked": "MaskedPSN", "sliding": "SlidingPSN", "mfpsn": "MFPSN"}


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
    if neuron == "mfpsn":
        return mfpsn_shape(T, n_prime, channels)
    return (T, n_prime)


def lif_implementation(device: torch.device) -> str:
    """The implementation SpikingJelly binds to a multi-step LIFNode on ``device``."""
    from spikingjelly.activation_based import functional

    try:
        return str(functional.neuron_implementation("lif", device)["implementation"])
    except (RuntimeError, ValueError) as exc:
        return f"unknown ({exc})"


def _plugin(spec: CaseSpec) -> tuple[nn.Module, int | None, int | None]:
    try:
        import spikingjelly_psn

        cls = getattr(spikingjelly_psn, _PLUGIN_CLASSES[spec.neuron])
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"spikingjelly_psn.{_PLUGIN_CLASSES[spec.neuron]}: {exc}") from exc
    k = min(spec.k, spec.T)
    try:
        if spec.neuron == "psn":
            return cls(spec.T, backend=spec.backend), None, None
        mode = {"step_mode": "m", "backend": spec.backend}  # whole sequences, as the baselines
        if spec.neuron == "masked":
            return cls(k, spec.T, lambda_init=1.0, **mode), k, None
        if spec.neuron == "sliding":
            return cls(spec.k, **mode), spec.k, None
        module = cls(
            spec.k,
            dilation=spec.dilation,
            channels=spec.channels,
            threshold=spec.mfpsn_threshold,
            **mode,
        )
        return module, spec.k, spec.dilation
    except (ImportError, NotImplementedError) as exc:
        raise Unavailable(f"backend {spec.backend!r}: {type(exc).__name__}: {exc}") from exc


def _baseline(spec: CaseSpec, device: torch.device) -> tuple[nn.Module, str, int | None]:
    from spikingjelly.activation_based import neuron

    if spec.neuron in ("sj-psn", CONTROL):
        return neuron.PSN(spec.T), "spikingjelly-torch", None
    if spec.neuron == "sj-masked":
        k = min(spec.k, spec.T)
        return neuron.MaskedPSN(k, spec.T, lambda_init=1.0, step_mode="m"), "spikingjelly-torch", k
    if spec.neuron == "sj-sliding":
        return neuron.SlidingPSN(spec.k, step_mode="m"), "spikingjelly-torch", spec.k
    return neuron.LIFNode(step_mode="m"), lif_implementation(device), None


def build(spec: CaseSpec, device: torch.device, dtype: torch.dtype) -> Case:
    """The layer of ``spec`` on ``device`` in ``dtype``; raises :class:`Unavailable` when it can't run.

    Masked PSN uses ``min(k, T)`` and ``λ = 1`` (the trained, causal state); the whole layer is cast
    to ``dtype``, as ``.half()`` would do.
    """
    if spec.neuron not in NEURONS:
        raise ValueError(f"unknown neuron {spec.neuron!r}; choose from {', '.join(NEURONS)}")
    if spec.neuron in PLUGIN_NEURONS:
        reason = backends.unavailable_reason(spec.backend, device)
        if reason is not None:
            raise Unavailable(reason)
        module, k, dilation = _plugin(spec)
        impl = spec.backend
    else:
        module, impl, k = _baseline(spec, device)
        dilation = None
    return Case(module.to(device=device, dtype=dtype), impl, k, dilation)
