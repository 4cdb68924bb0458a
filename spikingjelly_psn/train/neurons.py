"""Neurons chosen by the config: the four plugin classes and SpikingJelly's LIF/PLIF/IF baselines."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .config import ConfigError, NeuronConfig


class NeuronMaker:
    """Builds one neuron per call; numbers the sites so MFPSN gets its per-layer dilation.

    SpikingJelly's zoo calls ``maker(**kwargs)`` (it may add ``step_mode``); the paper nets call
    ``maker()``. Every call builds its own surrogate, so no module is shared between sites.
    """

    def __init__(self, cfg: NeuronConfig, T: int) -> None:
        self.cfg, self.T = cfg, T
        self.count = 0
        self.cls, self.kwargs = _class_and_kwargs(cfg, T)

    def dilation(self, index: int) -> int:
        """Dilation of the ``index``-th MFPSN site."""
        d = self.cfg.dilations
        if d == "none":
            return 1
        if d == "sawtooth":
            return index % self.cfg.sawtooth_period + 1
        if index >= len(d):
            raise ConfigError(
                f"neuron.dilations lists {len(d)} values but the model has more MFPSN layers; "
                f"give one per layer or use neuron.dilations=sawtooth"
            )
        return d[index]

    def __call__(self, **extra) -> nn.Module:
        from spikingjelly.activation_based import surrogate

        kwargs = {
            **self.kwargs,
            "surrogate_function": surrogate.ATan(alpha=self.cfg.surrogate_alpha),
        }
        if self.cfg.name == "MFPSN":
            kwargs["dilation"] = self.dilation(self.count)
        kwargs["step_mode"] = extra.pop("step_mode", "m")  # the nets feed whole sequences
        self.count += 1
        return self.cls(**kwargs)


def _class_and_kwargs(cfg: NeuronConfig, T: int) -> tuple[Callable[..., nn.Module], dict]:
    name = cfg.name
    if name in ("PSN", "MaskedPSN", "SlidingPSN", "MFPSN"):
        import spikingjelly_psn as psn

        cls = getattr(psn, name)
        kwargs: dict = {"backend": cfg.backend}
        if name == "PSN":
            kwargs["T"] = T
        elif name == "MaskedPSN":
            kwargs.update(k=cfg.k, T=T, lambda_init=0.0)
        elif name == "SlidingPSN":
            kwargs.update(k=cfg.k, exp_init=cfg.exp_init)
        else:
            kwargs.update(k=cfg.k, threshold=cfg.threshold, quantize=cfg.quantize)
        return cls, kwargs
    from spikingjelly.activation_based import neuron

    if cfg.backend != "torch":
        raise ConfigError(
            f"neuron.backend={cfg.backend} applies to the plugin neurons only; "
            f"set neuron.backend=torch for {name}"
        )
    cls = getattr(neuron, name)
    kwargs = {"detach_reset": cfg.detach_reset, "v_reset": None if cfg.soft_reset else 0.0}
    if name == "LIFNode":
        kwargs["tau"] = cfg.tau
    elif name == "ParametricLIFNode":
        kwargs["init_tau"] = cfg.tau
    return cls, kwargs
