"""Autocast, handled by the ops themselves: SpikingJelly's casts for ``addmm``, none inside."""

from __future__ import annotations

import contextlib

import torch


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The autocast dtype on ``x``'s device, or None when autocast is off there."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def autocast_like_addmm(dtype: torch.dtype | None, *tensors: torch.Tensor | None):
    """The tensors as autocast hands them to ``addmm`` (fp64 and None left alone)."""
    if dtype is None:
        return tensors
    return tuple(t if t is None or t.dtype == torch.float64 else t.to(dtype) for t in tensors)


def no_autocast(x: torch.Tensor):
    """A context with autocast off on ``x``'s device: the ops pick their dtypes themselves, in
    the forward and in a backward that may run inside an autocast region."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()
