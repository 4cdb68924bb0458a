"""MFPSN: the multiplication-free channel-wise PSN (Xue et al., NeurIPS 2025)."""

from __future__ import annotations

import functools
import math
import warnings

import torch
from spikingjelly.activation_based import base
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from spikingjelly_psn import ops
from spikingjelly_psn.neuron import queue as q
from spikingjelly_psn.neuron.common import (
    PSNFamilyMixin,
    autocast_dtype,
    check_finite,
    check_input,
    check_positive_int,
    check_steps,
)
from spikingjelly_psn.ops import reference
from spikingjelly_psn.ops.quantize import power_of_two_exponent, quantize_power_of_two
from spikingjelly_psn.ops.reference import accumulation_dtype

THRESHOLDS = ("bn", "learnable")
_EXTRA_STATE = "_extra_state"  # the key torch.nn.Module uses for get_extra_state()


def _wide(t: torch.Tensor) -> torch.Tensor:
    """A parameter in the dtype the folding is done in (fp32, or fp64 for gradcheck)."""
    return t.to(accumulation_dtype(t))


class MFPSN(LazyModuleMixin, PSNFamilyMixin, base.MemoryModule):
    r"""Channel-wise causal dilated temporal convolution with power-of-two taps, then fire.

    ``H[t, c] = Σ_i Wq[c, i] · X[t − (k−1−i)·d, c]`` (zero before t = 0) on input ``[T, N, C, *]``;
    ``S = Θ(H + b)``. ``threshold="bn"`` (the paper's) normalises ``H`` per channel with a batch
    norm (``gamma``, ``beta``, running statistics) folded into the weights before quantizing:
    ``Wq = Q(gamma·W/√(σ²+eps))``, ``b = beta − gamma·μ/√(σ²+eps)``. ``threshold="learnable"``
    uses ``Wq = Q(W)`` and a per-channel ``bias``. ``Q(w) = sign(w)·2^round(log2|w|)`` (optional
    exponent bounds) with a straight-through gradient; ``quantize=False`` keeps float weights.

    Step modes as SpikingJelly's sliding PSN: ``step_mode='s'`` by default, a multi-step call is
    one whole sequence, single steps (eval mode with the bn threshold) queue the last ``(k−1)·d``
    inputs until ``reset()``; ``streaming=True`` makes consecutive multi-step calls chunks of one
    sequence. With ``channels=None`` the per-channel parameters are created from the first input:
    run :func:`spikingjelly_psn.materialize` before building the optimizer or wrapping in DDP.
    """

    cls_to_become = None

    def __init__(
        self,
        k: int,
        dilation: int = 1,
        channels: int | None = None,
        threshold: str = "bn",
        quantize: bool = True,
        exp_min: int | None = None,
        exp_max: int | None = None,
        momentum: float = 0.1,
        eps: float = 1e-5,
        surrogate_function=None,
        step_mode: str = "s",
        backend: str = "torch",
        v_threshold: float = 1.0,
        streaming: bool = False,
        **reset_kwargs,
    ):
        with warnings.catch_warnings():  # torch's "lazy modules are a new feature" notice
            warnings.simplefilter("ignore", UserWarning)
            super().__init__()
        self.k = check_positive_int("k", k, "MFPSN")
        self.dilation = check_positive_int("dilation", dilation, "MFPSN")
        if threshold not in THRESHOLDS:
            raise ValueError(f"MFPSN: threshold must be one of {THRESHOLDS}, got {threshold!r}.")
        for name, bound in (("exp_min", exp_min), ("exp_max", exp_max)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)):
                raise ValueError(f"MFPSN: {name} must be an integer or None, got {bound!r}.")
        if exp_min is not None and exp_max is not None and exp_min > exp_max:
            raise ValueError(f"MFPSN: exp_min={exp_min} is greater than exp_max={exp_max}.")
        self.momentum = check_finite("momentum", momentum, "MFPSN")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"MFPSN: momentum must be in [0, 1], got {momentum!r}.")
        self.eps = check_finite("eps", eps, "MFPSN")
        if self.eps <= 0.0:
            raise ValueError(f"MFPSN: eps must be > 0 (it keeps 1/√(σ²+eps) finite), got {eps!r}.")
        self.threshold = threshold
        self.quantize = bool(quantize)
        self.exp_min, self.exp_max = exp_min, exp_max
        self.v_threshold = check_finite("v_threshold", v_threshold, "MFPSN")
        self.streaming = bool(streaming)
        self.register_memory("queue", [])
        self.weight = nn.UninitializedParameter()
        if threshold == "bn":
            self.gamma = nn.UninitializedParameter()
            self.beta = nn.UninitializedParameter()
            self.register_buffer("running_mean", nn.UninitializedBuffer())
            self.register_buffer("running_var", nn.UninitializedBuffer())
        else:
            self.bias = nn.UninitializedParameter()
        self._init_family(surrogate_function, step_mode, backend, reset_kwargs)
        if channels is not None:
            self.materialize_channels(check_positive_int("channels", channels, "MFPSN"))

    # ----------------------------------------------------------------- parameters
    @property
    def channels(self) -> int | None:
        """The number of channels, or None before the first input."""
        return None if self.has_uninitialized_params() else self.weight.shape[0]

    @property
    def lag(self) -> int:
        """How many steps back the oldest tap reaches: ``(k−1)·dilation``."""
        return (self.k - 1) * self.dilation

    def materialize_channels(
        self, channels: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> None:
        """Create the per-channel parameters for ``channels`` channels and initialise them."""
        kw = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        self.weight.materialize((channels, self.k), **kw)
        with torch.no_grad():
            nn.init.uniform_(self.weight, -1 / math.sqrt(self.k), 1 / math.sqrt(self.k))
            if self.threshold == "bn":
                self.gamma.materialize((channels,), **kw)
                self.beta.materialize((channels,), **kw)
                self.running_mean.materialize((channels,), **kw)
                self.running_var.materialize((channels,), **kw)
                self.gamma.fill_(1.0)
                self.beta.fill_(-self.v_threshold)
                self.running_mean.zero_()
                self.running_var.fill_(1.0)
            else:
                self.bias.materialize((channels,), **kw)
                self.bias.fill_(-self.v_threshold)

    def initialize_parameters(self, x: torch.Tensor, *args, **kwargs) -> None:
        """Lazy hook: channels from dim 2 of the first multi-step input (dim 1 of a single step)."""
        if not self.has_uninitialized_params():
            return
        self._check_all_or_nothing_materialized()
        check_input(x, "MFPSN", 3 if self.step_mode == "m" else 2, self._layout())
        channels = x.shape[2 if self.step_mode == "m" else 1]
        if channels == 0:
            raise ValueError(
                f"MFPSN got an input with 0 channels (shape {tuple(x.shape)}, channels at dim "
                f"{2 if self.step_mode == 'm' else 1}); it needs at least one channel."
            )
        dtype = torch.float64 if x.dtype == torch.float64 else torch.get_default_dtype()
        self.materialize_channels(channels, x.device, dtype)

    def _check_all_or_nothing_materialized(self) -> None:
        """Some tensors created (a partial state loaded with strict=False) and others not: say which."""
        tensors = {
            **dict(self.named_parameters(recurse=False)),
            **dict(self.named_buffers(recurse=False)),
        }
        lazy = sorted(name for name, t in tensors.items() if is_lazy(t))
        if len(lazy) != len(tensors):
            raise ValueError(
                f"MFPSN: {lazy} are not initialised while the other parameters are (a partial "
                "state_dict loaded with strict=False?); load a state_dict with all of "
                f"{sorted(tensors)}, or build a new MFPSN."
            )

    def _layout(self) -> str:
        return "[T, N, C] or [T, N, C, H, W]" if self.step_mode == "m" else "[N, C] or [N, C, H, W]"

    def get_extra_state(self) -> dict:
        """The hyper-parameters a checkpoint must agree on (the dilation has no tensor of its own)."""
        return {"k": self.k, "dilation": self.dilation, "threshold": self.threshold}

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)  # lazy modules skip extras
        destination[prefix + _EXTRA_STATE] = self.get_extra_state()

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        missing_keys = args[2]
        if prefix + _EXTRA_STATE in missing_keys:  # saved before MFPSN stored its dilation
            missing_keys.remove(prefix + _EXTRA_STATE)

    def set_extra_state(self, state: dict) -> None:
        mine = self.get_extra_state()
        differ = {key: value for key, value in state.items() if mine.get(key) != value}
        if differ:
            found = ", ".join(f"{key}={value!r}" for key, value in differ.items())
            here = ", ".join(f"{key}={mine.get(key)!r}" for key in differ)
            raise ValueError(
                f"MFPSN: the state_dict was saved from an MFPSN with {found}, but this one has "
                f"{here}; build the neuron with the same arguments before loading."
            )

    # ----------------------------------------------------------------- folding
    def _quantized(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_power_of_two(w, self.exp_min, self.exp_max) if self.quantize else w

    def _fold(
        self,
        mean: torch.Tensor,
        var: torch.Tensor,
        weight: torch.Tensor,
        gamma: torch.Tensor,
        beta: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-norm statistics folded into the weights: ``(Q(W_f), b_f)``."""
        scale = _wide(gamma) * torch.rsqrt(var + self.eps)
        folded = self._quantized(_wide(weight) * scale[:, None])
        return folded, _wide(beta) - mean * scale

    def _eval_constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights and bias of the eval-mode neuron.

        Recomputed on every call (a few ops on ``[C, k]``): a cache keyed on the tensors would go
        stale when code edits them through ``.data``, as EMA and pruning tools do.
        """
        if self.threshold == "learnable":
            return self._quantized(_wide(self.weight)), _wide(self.bias)
        return self._fold(
            _wide(self.running_mean), _wide(self.running_var), self.weight, self.gamma, self.beta
        )

    def export_integer(self) -> dict[str, torch.Tensor | int]:
        """The eval-mode neuron for shift-and-add hardware: per channel and tap the sign and
        exponent (int8) of ``Wq``, the float ``bias``, plus ``k`` and ``dilation``."""
        if self.has_uninitialized_params():
            raise RuntimeError(
                "MFPSN.export_integer(): run one forward first to create the weights."
            )
        if not self.quantize:
            raise RuntimeError("MFPSN.export_integer() needs quantize=True (power-of-two weights).")
        with torch.no_grad():
            if self.threshold == "learnable":
                latent = _wide(self.weight)
                bias = _wide(self.bias)
            else:
                scale = _wide(self.gamma) * torch.rsqrt(_wide(self.running_var) + self.eps)
                latent = _wide(self.weight) * scale[:, None]
                bias = _wide(self.beta) - _wide(self.running_mean) * scale
            exponent = power_of_two_exponent(latent, self.exp_min, self.exp_max)
        if exponent.abs().max() > 127:
            raise OverflowError(
                "MFPSN.export_integer(): an exponent does not fit in int8; set exp_min/exp_max."
            )
        return {
            "sign": torch.sign(latent).to(torch.int8).cpu(),
            "exponent": exponent.to(torch.int8).cpu(),
            "bias": bias.cpu(),
            "k": self.k,
            "dilation": self.dilation,
        }

    # ----------------------------------------------------------------- forward
    def _check_channels(self, x_seq: torch.Tensor) -> None:
        if x_seq.shape[2] != self.weight.shape[0]:
            raise ValueError(
                f"MFPSN has {self.weight.shape[0]} channels but got input with {x_seq.shape[2]} "
                f"channels at dim 2 (shape {tuple(x_seq.shape)}); use one MFPSN per layer."
            )

    def single_step_functional_forward(self, inputs, states, **kwargs):
        x = inputs[0]
        check_input(x, "MFPSN", 2, "[N, C] or [N, C, H, W]")
        if self.training and self.threshold == "bn":
            raise RuntimeError(
                "MFPSN with threshold='bn' needs whole sequences in training (its batch "
                "statistics span all time-steps): use step_mode='m' "
                "(functional.set_step_mode(net, 'm')) and feed [T, N, C, *] input; single steps "
                "work in eval mode (net.eval())."
            )
        (queue,) = states
        q.check_queue(queue, x.shape, "MFPSN")
        queue = q.push(queue, x, self.lag + 1)
        steps = q.window(queue, self.lag + 1, x)  # gradients flow back into the queued inputs
        history = steps[:-1] if self.lag else None
        spikes = self._fire(steps[-1:], history, reference.causal_conv_fire)
        return (spikes[0],), (queue,)

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        x_seq = inputs[0]
        check_input(x_seq, "MFPSN", 3, "[T, N, C] or [T, N, C, H, W]")
        (queue,) = states
        history = None
        if self.streaming:
            history, queue = q.continue_stream(queue, x_seq, self.lag, self.lag + 1, "MFPSN")
            states = (queue,)
        dtype = autocast_dtype(x_seq)
        x = x_seq if dtype is None else x_seq.to(dtype)  # as a convolution runs under autocast
        fire = functools.partial(ops.causal_conv_fire, backend=self.backend)
        return (self._fire(x, history, fire),), states

    def _fire(self, x_seq: torch.Tensor, history: torch.Tensor | None, fire) -> torch.Tensor:
        """Fold the threshold for this mode and fire; ``fire`` is a ``causal_conv_fire`` op."""
        self._check_channels(x_seq)
        T, N, C = x_seq.shape[:3]
        S = math.prod(x_seq.shape[3:])
        x4 = x_seq.reshape(T, N, C, S)
        h4 = None if history is None else history.reshape(history.shape[0], N, C, S)
        if self.training and self.threshold == "bn":
            check_steps(x_seq, "MFPSN")
            if x4.numel() == 0:
                raise ValueError(
                    f"MFPSN with threshold='bn' got an empty batch (shape {tuple(x_seq.shape)}) "
                    "in training; batch statistics need at least one value per channel."
                )
            spikes, mean, var = ops.batchnorm_conv_fire(
                x4, self.weight, self._fold, (self.weight, self.gamma, self.beta),
                self.dilation, self.surrogate_function, h4, self.quantize, self.backend,
            )  # fmt: skip
            self._update_running_stats(mean, var, x4.numel() // C)
            return spikes.view(x_seq.shape)
        if self.training:
            weight, bias = self._quantized(_wide(self.weight)), _wide(self.bias)
        else:
            weight, bias = self._eval_constants()
        if x4.numel() == 0:
            return torch.empty_like(x_seq)
        spikes = fire(x4, weight, bias, self.dilation, self.surrogate_function, h4, self.quantize)
        return spikes.view(x_seq.shape)

    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        """As ``torch.nn.BatchNorm``: momentum average of the mean and the unbiased variance."""
        with torch.no_grad():
            unbiased = var * (count / (count - 1)) if count > 1 else var
            m = self.momentum
            self.running_mean.copy_((1 - m) * self.running_mean + m * mean)
            self.running_var.copy_((1 - m) * self.running_var + m * unbiased)

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, dilation={self.dilation}, channels={self.channels}, "
            f"threshold={self.threshold}, quantize={self.quantize}, {self._family_repr()}"
        )
