"""The SpikingJelly surrogates a compiled backend implements, and the constants each one needs.

A surrogate maps to an id (the ``PSN_SG_*`` numbers of the CUDA kernels' ``psn_common.cuh``) and
three fp32 constants derived from its parameters the way SpikingJelly's backward derives them.
Backend-neutral: any kernel backend takes the same (id, constants).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from spikingjelly.activation_based import surrogate as sj

Params = tuple[float, float, float]


def _atan(alpha: float) -> Params:
    return math.pi * (alpha / 2), alpha / 2, 0.0


def _piecewise_quadratic(alpha: float) -> Params:
    return 1 / alpha, alpha**2, alpha


def _soft_sign(alpha: float) -> Params:
    return 2 * alpha, 1 / alpha, 0.0


def _erf(alpha: float) -> Params:
    return alpha, alpha / math.sqrt(math.pi), 0.0


def _piecewise_leaky_relu(w: float, c: float) -> Params:
    return w, 1 / (2 * w), c


def _squarewave(n: int, T_period: float) -> Params:
    return math.pi * 2.0 / T_period, 4.0 / T_period, float(n)


def _q_pseudo_spike(alpha: float) -> Params:
    return 2 / (alpha - 1), -alpha, 0.0


# class name -> (kernel id, parameter names in order, constants from those parameters)
SURROGATES: dict[str, tuple[int, tuple[str, ...], Callable[..., Params]]] = {
    "ATan": (0, ("alpha",), _atan),
    "Sigmoid": (1, ("alpha",), lambda alpha: (alpha, 0.0, 0.0)),
    "PiecewiseQuadratic": (2, ("alpha",), _piecewise_quadratic),
    "PiecewiseExp": (3, ("alpha",), lambda alpha: (alpha / 2, alpha, 0.0)),
    "SoftSign": (4, ("alpha",), _soft_sign),
    "SuperSpike": (5, ("alpha",), lambda alpha: (alpha, 0.0, 0.0)),
    "NonzeroSignLogAbs": (6, ("alpha",), lambda alpha: (1 / alpha, 0.0, 0.0)),
    "Erf": (7, ("alpha",), _erf),
    "PiecewiseLeakyReLU": (8, ("w", "c"), _piecewise_leaky_relu),
    "SquarewaveFourierSeries": (9, ("n", "T_period"), _squarewave),
    "S2NN": (10, ("alpha", "beta"), lambda alpha, beta: (alpha, beta, 0.0)),
    "QPseudoSpike": (11, ("alpha",), _q_pseudo_spike),
    "LeakyKReLU": (12, ("leak", "k"), lambda leak, k: (leak, k, 0.0)),
    "FakeNumericalGradient": (13, ("alpha",), lambda alpha: (alpha, 0.0, 0.0)),
    "LogTailedReLU": (14, ("alpha",), lambda alpha: (alpha, 0.0, 0.0)),
    "Rect": (15, ("alpha",), lambda alpha: (0.5 / alpha, alpha, 0.0)),
    "DeterministicPass": (16, (), lambda: (0.0, 0.0, 0.0)),
}
SURROGATE_COUNT = len(SURROGATES)


def supported() -> str:
    """The supported surrogates, for error messages."""
    return ", ".join(f"surrogate.{name}" for name in SURROGATES)


def encode(surrogate_function, backend: str) -> tuple[int, Params]:
    """(kernel id, fp32-ready constants) of a SpikingJelly surrogate, or a ValueError naming
    ``backend``."""
    name = type(surrogate_function).__name__
    entry = SURROGATES.get(name)
    if entry is None or type(surrogate_function) is not getattr(sj, name, None):
        raise ValueError(
            f"backend={backend!r} does not support the surrogate {surrogate_function!r}; it supports "
            f"SpikingJelly surrogates with a closed-form derivative: {supported()}. "
            "Use one of them, or backend='torch'."
        )
    if not getattr(surrogate_function, "spiking", True):
        raise ValueError(
            f"backend={backend!r} needs a spiking surrogate (spiking=True), got {surrogate_function!r}."
        )
    sg_id, names, constants = entry
    values = []
    for param in names:
        value = getattr(surrogate_function, param)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(
                f"backend={backend!r} needs {name}.{param} to be a Python number, got "
                f"{type(value).__name__}; a tensor-valued parameter is not supported."
            )
        values.append(value)
    return sg_id, tuple(float(v) for v in constants(*values))
