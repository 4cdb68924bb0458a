"""MFPSN: the multiplication-free channel-wise PSN (Xue et al., NeurIPS 2025)."""

from __future__ import annotations

import math
import warnings

import torch
from spikingjelly.activation_based import base
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from spikingjelly_psn import ops
from spikingjelly_psn.neuron.common import (
    PSNFamilyMixin,
    check_history,
    check_input,
    check_positive_int,
    next_history,
)
from spikingjelly_psn.ops.quantize import power_of_two_exponent, quantize_power_of_two
from spikingjelly_psn.ops.reference import accumulation_dtype

THRESHOLDS = ("bn", "learnable")


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

    With ``channels=None`` the per-channel parameters are created from the first input: run
    :func:`spikingjelly_psn.materialize` before building the optimizer or wrapping in DDP.
    Consecutive calls continue one sequence (the last ``(k−1)·d`` inputs are kept) until ``reset()``.
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
        step_mode: str = "m",
        backend: str = "torch",
        v_threshold: float = 1.0,
        **reset_kwargs,
    ):
        with warnings.catch_warnings():  # torch's "lazy modules are a new feature" notice
            warnings.simplefilter("ignore", UserWarning)
            super().__init__()
        self.k = check_positive_int("k", k, "MFPSN")
        self.dilation = check_positive_int("dilation", dilation, "MFPSN")
        if threshold not in THRESHOLDS:
            raise ValueError(f"MFPSN: threshold must be one of {THRESHOLDS}, got {threshold!r}.")
        if exp_min is not None and exp_max is not None and exp_min > exp_max:
            raise ValueError(f"MFPSN: exp_min={exp_min} is greater than exp_max={exp_max}.")
        self.threshold = threshold
        self.quantize = quantize
        self.exp_min, self.exp_max = exp_min, exp_max
        self.momentum, self.eps = momentum, eps
        self.v_threshold = float(v_threshold)
        self.register_memory("history", None)
        self._eval_cache: tuple | None = None
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
        check_input(x, "MFPSN", 3 if self.step_mode == "m" else 2, self._layout())
        dtype = torch.float64 if x.dtype == torch.float64 else torch.get_default_dtype()
        self.materialize_channels(x.shape[2 if self.step_mode == "m" else 1], x.device, dtype)

    def _layout(self) -> str:
        return "[T, N, C] or [T, N, C, H, W]" if self.step_mode == "m" else "[N, C] or [N, C, H, W]"

    # ----------------------------------------------------------------- folding
    def _quantized(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_power_of_two(w, self.exp_min, self.exp_max) if self.quantize else w

    def _fold(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-norm statistics folded into the weights: ``(Q(W_f), b_f)``."""
        scale = _wide(self.gamma) * torch.rsqrt(var + self.eps)
        weight = self._quantized(_wide(self.weight) * scale[:, None])
        return weight, _wide(self.beta) - mean * scale

    def _eval_constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights and bias of the eval-mode neuron, computed once per parameter change."""
        if self.threshold == "learnable":
            tensors = (self.weight, self.bias)
        else:
            tensors = (self.weight, self.gamma, self.beta, self.running_mean, self.running_var)
        # a graph that needs gradients, or one torch.compile traces, folds the constants itself
        cacheable = not torch.compiler.is_compiling() and not (
            torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        )
        if cacheable:
            key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
            if self._eval_cache is not None and self._eval_cache[0] == key:
                return self._eval_cache[1]
        if self.threshold == "learnable":
            constants = (self._quantized(_wide(self.weight)), _wide(self.bias))
        else:
            constants = self._fold(_wide(self.running_mean), _wide(self.running_var))
        if cacheable:
            self._eval_cache = (key, constants)
        return constants

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

    single_step_layout = "[N, C] or [N, C, H, W]"
    single_step_min_dim = 2

    def _check_single_step(self) -> None:
        if self.training and self.threshold == "bn":
            raise RuntimeError(
                "MFPSN with threshold='bn' needs the whole sequence in training (its batch "
                "statistics span all time-steps); single-step mode works in eval mode (net.eval())."
            )

    def multi_step_functional_forward(self, inputs, states, single: bool = False, **kwargs):
        x_seq = inputs[0]
        check_input(x_seq, "MFPSN", 3, "[T, N, C] or [T, N, C, H, W]")
        self._check_channels(x_seq)
        (history,) = states
        check_history(history, x_seq, "MFPSN")
        T, N, C = x_seq.shape[:3]
        x4 = x_seq.reshape(T, N, C, -1)
        h4 = None if history is None else history.reshape(history.shape[0], N, C, -1)
        backend = "torch" if single else self.backend
        if self.training and self.threshold == "bn":
            mean, var = ops.conv_channel_stats(x4, self.weight, self.dilation, h4, backend)
            self._update_running_stats(mean, var, x4.numel() // C)
            weight, bias = self._fold(mean, var)
        elif self.training:
            weight, bias = self._quantized(_wide(self.weight)), _wide(self.bias)
        else:
            weight, bias = self._eval_constants()
        spikes = ops.causal_conv_fire(
            x4, weight, bias, self.dilation, self.surrogate_function, h4, self.quantize, backend
        )
        new_history = next_history(history, x_seq, (self.k - 1) * self.dilation)
        return (spikes.view(x_seq.shape),), (new_history,)

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
