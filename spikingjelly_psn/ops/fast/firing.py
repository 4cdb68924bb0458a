"""Firing and its surrogate gradient, in place on the charge buffer, for the surrogates we know.

SpikingJelly's surrogates fire with ``(h >= 0).to(h)`` and differentiate with a chain of
out-of-place ops, each a new ``[T, N']`` tensor. For a spiking ``surrogate.ATan`` (the default)
the same ops run here in place on one buffer, in the same order, so the values are bit for bit
SpikingJelly's; any other surrogate takes the generic path (autograd through the module).
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import surrogate


def is_lean(surrogate_function) -> bool:
    """Whether ``surrogate_function`` is a spiking ATan with a number alpha and no hooks."""
    return (
        type(surrogate_function) is surrogate.ATan
        and surrogate_function.spiking is True
        and isinstance(surrogate_function.alpha, (int, float))
        and not surrogate_function._forward_hooks
        and not surrogate_function._forward_pre_hooks
    )


def fire_(h: torch.Tensor) -> torch.Tensor:
    """Spikes ``Θ(h)`` written over ``h``: 1 where ``h >= 0``, else 0 (NaN gives 0)."""
    return h.ge_(0)


def atan_grad_(h: torch.Tensor, grad_spikes: torch.Tensor, alpha: float) -> torch.Tensor:
    """``h`` overwritten with ``grad_spikes · α/2 / (1 + (π/2·α·h)²)``, SpikingJelly's op order."""
    a = alpha / 2
    h.mul_(math.pi * a)
    h.mul_(h)
    h.add_(1)
    h.reciprocal_()
    h.mul_(a)
    return h.mul_(grad_spikes)


class LeanATan:
    """Spiking ATan: fire and differentiate in place."""

    def __init__(self, alpha: float):
        self.alpha = alpha

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        return fire_(h)

    def grad(self, h: torch.Tensor, grad_spikes: torch.Tensor) -> torch.Tensor:
        return atan_grad_(h, grad_spikes, self.alpha)


class Generic:
    """Any surrogate module: its forward, and its own backward through autograd."""

    def __init__(self, surrogate_function):
        self.surrogate_function = surrogate_function

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        return self.surrogate_function(h)

    def grad(self, h: torch.Tensor, grad_spikes: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            h = h.detach().requires_grad_()
            (grad,) = torch.autograd.grad(self.surrogate_function(h), h, grad_spikes)
        return grad


def strategy(surrogate_function) -> LeanATan | Generic:
    """The in-place strategy when the surrogate allows it, else the generic one."""
    if is_lean(surrogate_function):
        return LeanATan(float(surrogate_function.alpha))
    return Generic(surrogate_function)
