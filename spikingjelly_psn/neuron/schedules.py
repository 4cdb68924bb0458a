"""Training-time schedules of the PSN family: masked PSN's λ ramp and MFPSN's sawtooth dilations."""

from __future__ import annotations

from torch import nn

from spikingjelly_psn.neuron.masked_psn import MaskedPSN

LAMBDA_SCHEDULES = ("paper", "linear")


class LambdaSchedule:
    """λ of every :class:`MaskedPSN` per epoch, set once per epoch (no host sync in the forward).

    ``kind="paper"``: ``λ = min(1, 8e/(E−1))``, the PSN paper's runs (λ reaches 1 after ~E/8 epochs);
    ``kind="linear"``: ``λ = min(1, e/(E−1))``. ``e`` is the 0-based epoch, ``E`` the number of epochs.
    """

    def __init__(self, epochs: int, kind: str = "paper"):
        if kind not in LAMBDA_SCHEDULES:
            raise ValueError(
                f"LambdaSchedule: kind must be one of {LAMBDA_SCHEDULES}, got {kind!r}."
            )
        if epochs < 1:
            raise ValueError(f"LambdaSchedule: epochs must be >= 1, got {epochs}.")
        self.epochs = epochs
        self.kind = kind

    def value(self, epoch: int) -> float:
        """λ at the start of 0-based ``epoch``."""
        if self.epochs == 1:
            return 1.0
        rate = 8.0 if self.kind == "paper" else 1.0
        return min(1.0, rate * epoch / (self.epochs - 1))

    def apply(self, net: nn.Module, epoch: int) -> float:
        """Set λ on every MaskedPSN in ``net`` and return it."""
        lam = self.value(epoch)
        for module in net.modules():
            if isinstance(module, MaskedPSN):
                module.lambda_ = lam
        return lam


def sawtooth_dilations(num_layers: int, period: int = 3) -> list[int]:
    """Dilations ``1, 2, …, period, 1, 2, …`` for consecutive MFPSN layers (the paper's HDC rule).

    With k = 2 and three layers the receptive field is ``1 + (k−1)·(1+2+3) = 7`` steps instead of 4.
    """
    if num_layers < 0 or period < 1:
        raise ValueError(
            f"sawtooth_dilations: need num_layers >= 0 and period >= 1, got {num_layers}, {period}."
        )
    return [layer % period + 1 for layer in range(num_layers)]
