"""The run configuration: a typed schema, YAML loading, dotted overrides and validation.

Every check here runs before any data is read or any model is built, and each failure raises one
:class:`ConfigError` whose message names the offending key (or path) and how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from spikingjelly_psn import catalog

#: SpikingJelly's neurons a run may use as baselines (the plugin ones are in the catalog).
SPIKINGJELLY_NEURONS = ("LIFNode", "ParametricLIFNode", "IFNode")
NEURONS = (*catalog.NAMES, *SPIKINGJELLY_NEURONS)
PAPER_MODELS = ("seq_mlp", "seq_cifar_net", "cifar10_csnn", "cifar10dvs_vgg")
ZOO_MODULES = ("spiking_resnet", "sew_resnet", "spiking_vgg", "parametric_lif_net", "spikformer")
DATASETS = ("digits", "cifar10", "cifar100", "cifar10dvs", "dvs128gesture", "nmnist", "shd")
NEUROMORPHIC = ("cifar10dvs", "dvs128gesture", "nmnist", "shd")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_CONFIG_VALUES = 100_000  # after expanding YAML aliases
MAX_BASE_DEPTH = 8  # recipes inheriting from each other through ``base``


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and the fix."""


@dataclass
class DataConfig:
    """Which data set, how it is cut into time-steps, and how it is loaded."""

    dataset: str = "digits"
    root: str | None = None
    mode: Literal["sequential", "static"] = "sequential"
    T: int = 64
    split_by: Literal["number", "time"] = "number"
    test_fraction: float = 0.2
    resize: int | None = None
    batch_size: int = 64
    test_batch_size: int | None = None
    num_workers: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    hflip: bool = False
    random_crop: int = 0
    trivial_augment: bool = False
    random_erasing: float = 0.0
    normalize: bool = True


@dataclass
class NeuronConfig:
    """The spiking neuron put in every neuron site of the model."""

    name: str = "MFPSN"
    backend: str = "torch"  # one of spikingjelly_psn.ops.backends.names()
    k: int = 16
    dilations: Literal["sawtooth", "none"] | list[int] = "sawtooth"
    sawtooth_period: int = 3
    threshold: Literal["bn", "learnable"] = "bn"
    quantize: bool = True
    exp_init: bool = True
    lambda_schedule: Literal["paper", "linear"] = "paper"
    tau: float = 2.0
    detach_reset: bool = True
    soft_reset: bool = True
    surrogate_alpha: float = 2.0


@dataclass
class ModelConfig:
    """The network: a paper net or a SpikingJelly zoo builder (``module.function``)."""

    name: str = "seq_mlp"
    channels: int = 128
    layers: int = 3
    hidden: int = 256
    dropout: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimizer, learning-rate schedule and loss."""

    name: Literal["sgd", "adamw", "adam"] = "adamw"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: Literal["cosine", "none"] = "cosine"
    warmup_epochs: int = 0
    loss: Literal["ce", "tet"] = "ce"
    tet_lambda: float = 1e-3
    tet_means: float = 1.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    grad_clip: float | None = None


@dataclass
class TrainConfig:
    """Epochs, precision, compilation, logging and checkpointing."""

    epochs: int = 40
    amp: Literal["off", "fp16", "bf16"] = "off"
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    tensorboard: bool = True
    progress: bool = True
    plot: bool = True
    max_batches: int | None = None
    nonfinite_patience: int = 0


@dataclass
class ReferenceConfig:
    """What the paper reported for this recipe (documentation only)."""

    paper: str | None = None
    table: str | None = None
    accuracy: float | None = None
    notes: str | None = None


@dataclass
class Config:
    """A whole run."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what ``config.yaml`` in a run folder holds)."""
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, str(tp)
    )


_SCALAR_CHECKS = {
    type(None): lambda v: v is None,
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, list):
            return [_coerce(v, typing.get_args(tp)[0], key) for v in value]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif _SCALAR_CHECKS.get(tp, lambda v: False)(value):
        return value
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}; fix it with --set {key}=...")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'the config'} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            near = difflib.get_close_matches(str(key), sorted(fields), n=1)
            hint = f"did you mean '{prefix + '.' if prefix else ''}{near[0]}'? " if near else ""
            raise ConfigError(
                f"unknown config key '{dotted}'; {hint}known keys here: {', '.join(sorted(fields))}"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, dotted)
        else:
            kwargs[key] = _coerce(value, tp, dotted)
    return cls(**kwargs)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``optim.lr=1e-3`` into ``{"optim": {"lr": 0.001}}`` (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like KEY=VALUE, e.g. optim.lr=1e-3")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    value = _safe_load(raw, f"override '{text}'") if raw.strip() else None
    value = _fix_yaml_floats(value)
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML mapping, with its ``base`` recipe merged under it; a missing or malformed
    file is a :class:`ConfigError`."""
    return _read_recipe(Path(path), ())


def _read_recipe(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass an existing --config FILE")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file '{path}' cannot be read as text ({err})") from None
    raw = _safe_load(text, f"config file '{path}'") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys at top level")
    raw = _fix_yaml_floats(raw)
    if "base" not in raw:
        return raw
    base = _base_path(path, raw.pop("base"), chain)
    return _deep_merge(_read_recipe(base, (*chain, path.resolve())), raw)


def _base_path(path: Path, base: Any, chain: tuple[Path, ...]) -> Path:
    """The recipe ``base: FILE`` of ``path`` names (relative to ``path``'s folder), checked."""
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(
            f"config file '{path}': base must be the path of another recipe (relative to this "
            f"file's folder), got {base!r}"
        )
    target = (path.parent / base).resolve()
    if not target.is_file():
        raise ConfigError(f"config file '{path}': its base '{base}' ({target}) does not exist")
    if target == path.resolve() or target in chain:
        raise ConfigError(
            f"config file '{path}': base '{base}' leads back to a recipe that inherits from it; "
            f"a chain of bases must end in a recipe without one"
        )
    if len(chain) + 1 >= MAX_BASE_DEPTH:
        raise ConfigError(
            f"config file '{path}': more than {MAX_BASE_DEPTH} recipes inherit from each other; "
            f"flatten the chain of bases"
        )
    return target


def _safe_load(text: str, where: str) -> Any:
    """``yaml.safe_load`` whose result is a finite tree: no recursive alias, no alias bomb."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply; flatten it") from None
    _count_values(value, where, set(), {})
    return value


def _count_values(node: Any, where: str, open_nodes: set[int], done: dict[int, int]) -> int:
    """Values in ``node`` with every YAML alias expanded; refuses cycles and huge expansions.

    PyYAML builds an alias as a shared reference, so ``a: &x [*x]`` is a list that holds itself
    and nine nested lists of nine aliases each expand to 9^9 values: either would hang what
    walks the config afterwards.
    """
    if not isinstance(node, dict | list):
        return 1
    key = id(node)
    if key in open_nodes:
        raise ConfigError(
            f"{where} holds a recursive YAML alias (an anchor used inside its own value, "
            f"such as a: &x [*x]); write the value out instead"
        )
    if key not in done:
        open_nodes.add(key)
        children = node.values() if isinstance(node, dict) else node
        done[key] = 1 + sum(_count_values(c, where, open_nodes, done) for c in children)
        open_nodes.discard(key)
        if done[key] > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{where} expands to more than {MAX_CONFIG_VALUES:,} values through YAML "
                f"aliases; write a smaller config"
            )
    return done[key]


def _fix_yaml_floats(raw: Any) -> Any:
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string; turn such strings into floats."""
    if isinstance(raw, dict):
        return {k: _fix_yaml_floats(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_fix_yaml_floats(v) for v in raw]
    if isinstance(raw, str) and ("e" in raw.lower()):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Build a :class:`Config` from an optional YAML file and ``KEY=VALUE`` overrides."""
    raw: dict[str, Any] = read_yaml(path) if path is not None else {}
    for text in overrides:
        raw = _deep_merge(raw, parse_override(text))
    cfg = _build(Config, raw, "")
    check_semantics(cfg)
    return cfg


def _at_least(low: int) -> tuple[str, Callable[[Any], bool]]:
    return f">= {low}", lambda v: v >= low


# (key, requirement, test); a null value of an optional key passes.
RANGES: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("seed", "in [0, 4294967295]", lambda v: 0 <= v < 2**32),
    ("data.T", *_at_least(1)),
    ("data.batch_size", *_at_least(1)),
    ("data.test_batch_size", ">= 1 or null", lambda v: v >= 1),
    ("data.num_workers", *_at_least(0)),
    ("data.test_fraction", "in (0, 1)", lambda v: 0 < v < 1),
    ("data.resize", ">= 1 or null", lambda v: v >= 1),
    ("data.limit_train", ">= 1 or null", lambda v: v >= 1),
    ("data.limit_test", ">= 1 or null", lambda v: v >= 1),
    ("data.random_crop", *_at_least(0)),
    ("data.random_erasing", "in [0, 1]", lambda v: 0 <= v <= 1),
    ("neuron.k", *_at_least(1)),
    ("neuron.sawtooth_period", *_at_least(1)),
    ("neuron.surrogate_alpha", "> 0", lambda v: v > 0),
    ("model.channels", *_at_least(1)),
    ("model.layers", *_at_least(1)),
    ("model.hidden", *_at_least(1)),
    ("model.dropout", "in [0, 1)", lambda v: 0 <= v < 1),
    ("optim.lr", "> 0", lambda v: v > 0),
    ("optim.momentum", "in [0, 1)", lambda v: 0 <= v < 1),
    ("optim.weight_decay", *_at_least(0)),
    ("optim.warmup_epochs", *_at_least(0)),
    ("optim.tet_lambda", *_at_least(0)),
    ("optim.label_smoothing", "in [0, 1)", lambda v: 0 <= v < 1),
    ("optim.mixup_alpha", *_at_least(0)),
    ("optim.cutmix_alpha", *_at_least(0)),
    # 0 would clip every gradient to zero; null turns clipping off.
    ("optim.grad_clip", "> 0 or null (off)", lambda v: v > 0),
    ("train.epochs", *_at_least(1)),
    ("train.max_batches", ">= 1 or null", lambda v: v >= 1),
    ("train.nonfinite_patience", *_at_least(0)),
)


def time_steps(d: DataConfig) -> int:
    """Time-steps the model sees: digits 64 pixels, sequential CIFAR 32 columns, else data.T."""
    if d.dataset == "digits":
        return 64
    if d.dataset in ("cifar10", "cifar100") and d.mode == "sequential":
        return 32
    return d.T


def check_semantics(cfg: Config) -> None:
    """Cross-field and range checks that a type annotation cannot express."""
    _check_names(cfg)
    _check_finite(cfg)
    for key, requirement, ok in RANGES:
        value = _get(cfg, key)
        if value is not None and not ok(value):
            raise ConfigError(f"{key} must be {requirement}, got {value}")
    _check_combinations(cfg)


def _check_names(cfg: Config) -> None:
    d, n, m = cfg.data, cfg.neuron, cfg.model
    if not RUN_NAME.fullmatch(cfg.name):
        raise ConfigError(
            f"name {cfg.name!r} must be a plain folder name (letters, digits, '.', '_', '-', "
            f"at most 100) since it names the run folder in runs/; fix it with --set name=..."
        )
    if d.dataset not in DATASETS:
        raise ConfigError(
            f"data.dataset: unknown data set '{d.dataset}'; choose one of {', '.join(DATASETS)}"
        )
    if n.name not in NEURONS:
        near = difflib.get_close_matches(n.name, NEURONS, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(
            f"neuron.name: unknown neuron '{n.name}'{hint}; choose one of {', '.join(NEURONS)}"
        )
    _check_backend(n.backend)
    if m.name not in PAPER_MODELS and m.name.split(".")[0] not in ZOO_MODULES:
        raise ConfigError(
            f"model.name: unknown model '{m.name}'; use a paper net ({', '.join(PAPER_MODELS)}) "
            f"or a SpikingJelly zoo builder written module.function, module one of "
            f"{', '.join(ZOO_MODULES)} (e.g. spiking_resnet.spiking_resnet18)"
        )


def _check_backend(backend: str) -> None:
    from spikingjelly_psn.ops import backends  # imports torch: only when a config is checked

    names = backends.names()
    if backend not in names:
        choices = " or ".join(repr(name) for name in names)
        raise ConfigError(
            f"neuron.backend must be {choices}, got {backend!r}; fix it with --set neuron.backend=..."
        )


def _check_finite(cfg: Any, prefix: str = "") -> None:
    """Every float key is finite (``.inf`` passes ``lr > 0`` and trains on NaN)."""
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{key} must be a finite number, got {value}; fix it with --set {key}=..."
            )


def _check_combinations(cfg: Config) -> None:
    d, n = cfg.data, cfg.neuron
    if isinstance(n.dilations, list) and any(v < 1 for v in n.dilations):
        raise ConfigError(f"neuron.dilations must be positive integers, got {n.dilations}")
    if d.dataset in ("digits", "shd") and d.mode == "static":
        raise ConfigError(f"data.mode=static is for image data sets, not {d.dataset}")
    T = time_steps(d)
    plugin = catalog.by_name(n.name)
    if plugin is not None and plugin.takes_k and n.k > T:
        raise ConfigError(f"neuron.k={n.k} exceeds the {T} time-steps; set neuron.k<={T}")
    if n.name in ("LIFNode", "ParametricLIFNode") and not n.tau > 1:
        raise ConfigError(f"neuron.tau must be > 1 for {n.name}, got {n.tau}")


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_paths(cfg: Config) -> None:
    """Check that the data set folder exists and holds something SpikingJelly can read."""
    d = cfg.data
    if d.dataset == "digits":
        return
    if d.root is None:
        raise ConfigError(
            f"data.root is not set; {d.dataset} is read from a local folder: "
            f"--set data.root=PATH (or --fake-data for a dry run on generated data)"
        )
    root = Path(d.root).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"data.root: folder '{root}' does not exist; put the {d.dataset} data set there "
            f"or point --set data.root=PATH at it (or use --fake-data for a dry run)"
        )
    if d.dataset in ("cifar10", "cifar100"):
        sub = "cifar-10-batches-py" if d.dataset == "cifar10" else "cifar-100-python"
        if not (root / sub).is_dir():
            raise ConfigError(
                f"data.root: '{root}' has no '{sub}' folder; extract the python version of "
                f"{d.dataset.upper()} (from https://www.cs.toronto.edu/~kriz/cifar.html) there"
            )
    elif d.dataset in NEUROMORPHIC:
        raw = "events_h5" if d.dataset == "shd" else "events_np"
        if not any((root / sub).exists() for sub in (raw, "download", "extract")):
            raise ConfigError(
                f"data.root: '{root}' holds neither '{raw}' nor 'download'; place the "
                f"{d.dataset} archives in '{root / 'download'}' (SpikingJelly converts them) "
                f"- nothing is downloaded by this command"
            )
