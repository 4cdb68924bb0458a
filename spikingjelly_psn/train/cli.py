"""``spikingjelly-psn train``: parse arguments, validate the config, then train or dry-run."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from .config import Config, ConfigError, check_paths, load_config, read_yaml

DEFAULT_CONFIG = "digits_mfpsn.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spikingjelly-psn train",
        description="Train a spiking network with PSN-family neurons from a YAML recipe. "
        "With no argument: MFPSN on scikit-learn's handwritten digits, one pixel per step.",
    )
    p.add_argument(
        "--config", metavar="FILE", help="YAML recipe (default: the embedded digits run)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. --set optim.lr=1e-3 neuron.k=8",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, build model and data, run one batch, print the model; no files",
    )
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/NAME-TIMESTAMP)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--seed", type=int, help="random seed (overrides the config's seed)")
    p.add_argument(
        "--fake-data",
        action="store_true",
        help="generate a tiny fake copy of the data set in a temporary folder and use it",
    )
    p.add_argument("--crash-after-batches", type=int, help=argparse.SUPPRESS)
    return p


def default_config_path() -> Path:
    """The embedded default recipe shipped inside the package."""
    return Path(__file__).with_name("recipes") / DEFAULT_CONFIG


def _resolve(args: argparse.Namespace) -> Config:
    if args.resume:
        if args.config or args.overrides or args.seed is not None:
            raise ConfigError(
                "--resume continues a run exactly as it was configured; drop --config/--set/--seed"
            )
        run = Path(args.resume)
        if not (run / "last.pt").is_file() or not (run / "config.yaml").is_file():
            raise ConfigError(
                f"--resume {run}: no last.pt and config.yaml there; pass the folder of a run "
                f"that finished at least one epoch"
            )
        return load_config(run / "config.yaml")
    path = args.config or default_config_path()
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    read_yaml(path)
    return load_config(path, overrides)


def _quiet_spikingjelly_logs() -> None:
    """SpikingJelly logs every converted file at DEBUG level; keep warnings only."""
    try:
        from loguru import logger
    except ImportError:
        return
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        cfg = _resolve(args)
        with ExitStack() as stack:
            if args.fake_data and cfg.data.dataset != "digits":
                from .fake import make_fake_dataset

                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="fake-data-"))
                cfg.data.root = str(make_fake_dataset(cfg.data.dataset, tmp, seed=cfg.seed))
            check_paths(cfg)
            return _execute(cfg, args)
    except ConfigError as err:
        print(f"spikingjelly-psn train: error: {err}", file=sys.stderr)
        return 2


def _execute(cfg: Config, args: argparse.Namespace) -> int:
    from . import checkpoint as ckpt
    from .dist import init_distributed, shutdown, wait_for_all
    from .trainer import Trainer, pick_device, save_config

    _quiet_spikingjelly_logs()
    info = init_distributed(args.device or "auto")
    try:
        device = pick_device(args.device or "auto", info)
        if args.dry_run:
            Trainer(cfg, device, info, None).dry_run()
            return 0
        if args.resume:
            out = Path(args.resume)
        else:
            out = Path(args.out or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
            if (out / "last.pt").exists():
                raise ConfigError(
                    f"--out {out} already holds a run; use --resume {out} or a new --out"
                )
        trainer = Trainer(cfg, device, info, out, crash_after=args.crash_after_batches)
        if args.resume:
            trainer.load_state(ckpt.load(out / "last.pt"))
            if info.is_main:
                print(f"resuming {out} at epoch {trainer.start_epoch + 1}", flush=True)
        elif info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out)
        trainer.run()
        wait_for_all(info)  # a rank that tears gloo down while another still talks aborts
        return 0
    finally:
        shutdown(info)
