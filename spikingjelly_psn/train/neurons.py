"""Neurons chosen by the config: the plugin neurons of the catalog and SpikingJelly's LIF/PLIF/IF."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from spikingjelly_psn import catalog
from spikingjelly_psn.neuron.schedules import LambdaSchedule, sawtooth_dilations

from .config import Config, ConfigError, NeuronConfig


class NeuronMaker:
    """Builds one neuron per call; numbers the sites so MFPSN gets its per-layer dilation.

    SpikingJelly's zoo calls ``maker(**kwargs)`` (it may add ``step_mode``); the paper nets call
    ``maker()``. Every call builds its own surrogate, so no module is shared between sites.
    """

    def __init__(self, cfg: NeuronConfig, T: int) -> None:
        self.cfg, self.T = cfg, T
        self.count = 0
        self.plugin = catalog.by_name(cfg.name)
        if self.plugin is not None:
            self.cls = self.plugin.cls()
            self.kwargs = {"backend": cfg.backend, **self.plugin.train_kwargs(cfg, T)}
        else:
            self.cls, self.kwargs = _spikingjelly_class_and_kwargs(cfg)

    def dilation(self, index: int) -> int:
        """Dilation of the ``index``-th site that takes one."""
        d = self.cfg.dilations
        if d == "none":
            return 1
        if d == "sawtooth":
            return sawtooth_dilations(index + 1, self.cfg.sawtooth_period)[index]
        if index >= len(d):
            raise ConfigError(
                f"neuron.dilations lists {len(d)} values but the model has more {self.cfg.name} "
                f"layers; give one per layer or use neuron.dilations=sawtooth"
            )
        return d[index]

    def __call__(self, **extra) -> nn.Module:
        from spikingjelly.activation_based import surrogate

        kwargs = {
            **self.kwargs,
            "surrogate_function": surrogate.ATan(alpha=self.cfg.surrogate_alpha),
        }
        if self.plugin is not None and self.plugin.per_site_dilation:
            kwargs["dilation"] = self.dilation(self.count)
        kwargs["step_mode"] = extra.pop("step_mode", "m")  # the nets feed whole sequences
        self.count += 1
        return self.cls(**kwargs)


def _spikingjelly_class_and_kwargs(cfg: NeuronConfig) -> tuple[Callable[..., nn.Module], dict]:
    from spikingjelly.activation_based import neuron

    name = cfg.name
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


def lambda_schedule(cfg: Config) -> LambdaSchedule | None:
    """The λ schedule of the run's neuron over ``train.epochs``, or None when it has none."""
    plugin = catalog.by_name(cfg.neuron.name)
    if plugin is None or not plugin.lambda_schedule:
        return None
    return LambdaSchedule(cfg.train.epochs, cfg.neuron.lambda_schedule)
