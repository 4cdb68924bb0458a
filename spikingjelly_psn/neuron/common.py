"""What every plugin neuron shares: constructor compatibility, step mode, backend and input checks."""

from __future__ import annotations

import warnings

import torch
from spikingjelly.activation_based import surrogate

from spikingjelly_psn.backend import validate_backend

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
            f"{cls_name} has no reset, so {sorted(kwargs)} are ignored.", UserWarning, stacklevel=3
        )


def check_positive_int(name: str, value: int, cls_name: str) -> int:
    """``value`` if it is an integer >= 1, else a ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{cls_name}: {name} must be an integer >= 1, got {value!r}.")
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


def next_history(history: torch.Tensor | None, x_seq: torch.Tensor, length: int):
    """The last ``length`` inputs of ``history ++ x_seq`` (zeros before the first), or None if 0.

    The history is data, not graph: gradients do not flow from one call into the previous one,
    and a forgotten ``reset_net`` cannot keep an old batch's graph alive.
    """
    if length == 0:
        return None
    x_seq = x_seq.detach()
    if history is None and x_seq.shape[0] >= length:
        return x_seq[-length:]
    if history is None:
        history = x_seq.new_zeros((length, *x_seq.shape[1:]))
    return torch.cat([history.to(x_seq.dtype), x_seq])[-length:]


def check_history(history: torch.Tensor | None, x_seq: torch.Tensor, cls_name: str) -> None:
    """Input history from the previous call must match this input's per-step shape."""
    if history is not None and history.shape[1:] != x_seq.shape[1:]:
        raise ValueError(
            f"{cls_name} carries the input history of its previous call, shaped "
            f"{tuple(history.shape[1:])} per step, but this input is {tuple(x_seq.shape[1:])} per "
            "step. Call spikingjelly.activation_based.functional.reset_net(net) between "
            "independent sequences."
        )


class PSNFamilyMixin:
    """Step mode, backend and constructor conventions shared by the plugin neurons.

    Place it before the SpikingJelly base class so its ``step_mode`` property wins.
    """

    #: Step modes the class supports; PSN overrides with ``("m",)``.
    step_modes: tuple[str, ...] = ("s", "m")
    #: The input layout of one step, for error messages, and its lowest rank.
    single_step_layout: str = "[N, *]"
    single_step_min_dim: int = 1

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

    def _check_single_step(self) -> None:
        """Raise if the neuron cannot run one step at a time in its current state."""

    def single_step_functional_forward(self, inputs, states, **kwargs):
        """One step is a one-step sequence: the same math (torch backend) and the same state."""
        x = inputs[0]
        check_input(x, type(self).__name__, self.single_step_min_dim, self.single_step_layout)
        self._check_single_step()
        (spikes,), states = self.multi_step_functional_forward(
            (x.unsqueeze(0),), states, single=True
        )
        return (spikes[0],), states

    @property
    def supported_backends(self) -> tuple[str, ...]:
        """``('torch', 'cupy')`` in multi-step mode; single steps always run on torch.

        A backend chosen in multi-step mode is kept when the step mode changes.
        """
        return ("torch", "cupy") if self.step_mode == "m" else ("torch",)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        validate_backend(self, value)
        self._backend = value

    def _family_repr(self) -> str:
        return f"step_mode={self.step_mode}, backend={self.backend}"
