"""What every plugin neuron shares: constructor compatibility, step mode, backend and input checks."""

from __future__ import annotations

import math
import sys
import warnings

import torch
from spikingjelly.activation_based import surrogate

from spikingjelly_psn.backend import validate_backend
from spikingjelly_psn.ops import backends

#: Arguments SpikingJelly scripts pass to reset-based neurons; a PSN has no reset, so they are ignored.
RESET_ONLY_KWARGS = frozenset({"detach_reset", "v_reset", "tau", "decay_input", "store_v_seq"})

_warned_reset_kwargs: set[str] = set()


def check_reset_kwargs(cls_name: str, kwargs: dict) -> None:
    """Accept reset-only arguments with one warning per class; reject anything else."""
    unknown = sorted(set(kwargs) - RESET_ONLY_KWARGS)
    if unknown:
        raise TypeError(
            f"{cls_name}.__init__() got unexpected keyword argument(s) {unknown}; besides its own "
            f"arguments it accepts (and ignores) only the reset arguments {sorted(RESET_ONLY_KWARGS)}."
        )
    if kwargs and cls_name not in _warned_reset_kwargs:
        _warned_reset_kwargs.add(cls_name)
        warnings.warn(
            f"{cls_name} has no reset, so {sorted(kwargs)} are ignored.",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )


_LIBRARY_PACKAGES = frozenset({"spikingjelly", "spikingjelly_psn"})


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside this plugin and SpikingJelly.

    A warning then names the user's line, whether the neuron was built there or inside a
    SpikingJelly model-zoo builder that the user called.
    """
    level, frame = 1, sys._getframe(1)  # level 1: the function that calls warnings.warn
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
        _LIBRARY_PACKAGES
    ):
        level, frame = level + 1, frame.f_back
    return level


def check_positive_int(name: str, value: int, cls_name: str) -> int:
    """``value`` if it is an integer >= 1, else a ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{cls_name}: {name} must be an integer >= 1, got {value!r}.")
    return value


def check_finite(name: str, value: float, cls_name: str) -> float:
    """``float(value)`` if it is a finite number, else a ``ValueError`` naming the argument."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{cls_name}: {name} must be a finite number, got {value!r}.")
    return value


def check_input(x: torch.Tensor, cls_name: str, min_dim: int, layout: str) -> None:
    """Reject non-tensor, integer or too-low-rank input with a message that says what is expected."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{cls_name} expects a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(
            f"{cls_name} expects a floating-point input, got dtype {x.dtype}; "
            "convert it with x.float() (spikes and gradients are real-valued)."
        )
    if x.dim() < min_dim:
        raise ValueError(
            f"{cls_name} expects input shaped {layout}, got a {x.dim()}-D tensor of shape "
            f"{tuple(x.shape)}."
        )


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would run a matmul on ``x`` in, or None outside autocast (or for fp64)."""
    device = x.device.type
    if x.dtype == torch.float64 or not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def check_matmul_dtypes(x: torch.Tensor, weight: torch.Tensor, cls_name: str) -> None:
    """Outside autocast, ``addmm`` needs the input in the parameters' dtype: say how to get there."""
    if x.dtype != weight.dtype and autocast_dtype(x) is None:
        raise TypeError(
            f"{cls_name}'s parameters are {weight.dtype} but the input is {x.dtype}: run the "
            f"model under torch.autocast, convert the module with .to({x.dtype}), or convert "
            f"the input with .to({weight.dtype})."
        )


def check_steps(x_seq: torch.Tensor, cls_name: str) -> None:
    """A multi-step input needs at least one time-step along dim 0."""
    if x_seq.shape[0] == 0:
        raise ValueError(
            f"{cls_name} got an input with 0 time-steps (shape {tuple(x_seq.shape)}); "
            "a multi-step input is [T, N, *] with T >= 1."
        )


class PSNFamilyMixin:
    """Step mode, backend and constructor conventions shared by the plugin neurons.

    Place it before the SpikingJelly base class so its ``step_mode`` property wins.
    """

    #: Step modes the class supports; PSN overrides with ``("m",)``.
    step_modes: tuple[str, ...] = ("s", "m")
    #: Older SpikingJelly backend names this class accepts, and the backend each one means.
    backend_aliases: dict[str, str] = {}

    def _init_family(
        self, surrogate_function, step_mode: str, backend: str, reset_kwargs: dict
    ) -> None:
        check_reset_kwargs(type(self).__name__, reset_kwargs)
        self.surrogate_function = (
            surrogate.ATan() if surrogate_function is None else surrogate_function
        )
        self._backend = "torch"
        self.step_mode = step_mode
        self.backend = backend

    def supported_step_mode(self) -> tuple[str, ...]:
        return self.step_modes

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value not in self.step_modes:
            raise ValueError(
                f"{type(self).__name__} does not support step_mode={value!r}; supported: "
                f"{self.step_modes}. {self._single_step_hint()}"
            )
        self._step_mode = value

    def _single_step_hint(self) -> str:
        return ""

    @property
    def supported_backends(self) -> tuple[str, ...]:
        """Every backend in multi-step mode; single steps run on those that run single steps.

        A backend chosen in multi-step mode is kept when the step mode changes.
        """
        return backends.names() if self.step_mode == "m" else backends.single_step_names()

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        value = self.backend_aliases.get(value, value)
        validate_backend(self, value)
        self._backend = value

    def _family_repr(self) -> str:
        return f"step_mode={self.step_mode}, backend={self.backend}"
