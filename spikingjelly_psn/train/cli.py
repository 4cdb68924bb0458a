"""``spikingjelly-psn train``: parse arguments, validate the config, then train or dry-run."""

from __future__ import annotations

import argparse
import errno
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..arg_types import positive_int
from .config import Config, ConfigError, check_paths, load_config, read_yaml

if TYPE_CHECKING:
    import torch

    from .dist import DistInfo

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
    p.add_argument(
        "--epochs",
        type=positive_int,
        metavar="N",
        help="train N epochs in all (overrides train.epochs); with --resume, extend a run to N",
    )
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/NAME-TIMESTAMP)")
    p.add_argument(
        "--device", help="auto, cpu, cuda, cuda:1, ... (default auto: cuda if available)"
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="PyTorch CPU threads (default: 1 on a CPU, or OMP_NUM_THREADS when set; "
        "PyTorch's own on a GPU)",
    )
    p.add_argument("--seed", type=int, help="random seed (overrides the config's seed)")
    p.add_argument(
        "--fake-data",
        action="store_true",
        help="generate a tiny fake copy of the data set in a temporary folder and use it",
    )
    return p


def default_config_path() -> Path:
    """The embedded default recipe shipped inside the package."""
    return Path(__file__).with_name("recipes") / DEFAULT_CONFIG


def _resolve(args: argparse.Namespace) -> Config:
    if args.resume:
        if args.config or args.overrides or args.seed is not None:
            raise ConfigError(
                "--resume continues a run exactly as it was configured; drop --config/--set/--seed "
                "(to train it longer: --resume DIR --epochs N)"
            )
        run = Path(args.resume)
        if args.out and Path(args.out).resolve() != run.resolve():
            raise ConfigError(
                f"--resume {run} continues the run in its own folder; drop --out {args.out} "
                f"(to branch the run, copy {run} to a new folder and resume the copy)"
            )
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
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
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
    """Entry point; returns the process exit status (2: bad input, 1: the run failed)."""
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
    except ConfigError as err:  # checkpoint errors too: a damaged --resume folder is bad input
        return _error(str(err), 2)
    except RunFailed as err:
        return _error(str(err), 1)


def _error(message: str, status: int) -> int:
    print(f"spikingjelly-psn train: error: {message}", file=sys.stderr)
    return status


class RunFailed(RuntimeError):
    """A run that stopped before its end: diverged, or a file could not be written."""


def _execute(cfg: Config, args: argparse.Namespace) -> int:
    from .dist import dist_info, init_distributed, shutdown, wait_for_all
    from .machine import default_threads, resolve_device, set_threads
    from .runfolder import claim
    from .steps import Diverged
    from .trainer import Trainer

    _quiet_spikingjelly_logs()
    info = dist_info()
    device = resolve_device(args.device or "auto", info.local_rank, info.world)
    set_threads(args.threads or default_threads(device))
    out: Path | None = None
    try:
        init_distributed(info, device)
        if args.dry_run:
            Trainer(cfg, device, info, None).dry_run()
            return 0
        out = Path(args.resume or args.out or _default_out(cfg))
        with ExitStack() as stack:
            if info.is_main:
                removed = stack.enter_context(claim(out, new_run=not args.resume))
                if removed:
                    print(f"removed {len(removed)} temporary file(s) of an interrupted write")
            state = None
            if args.resume:
                state = _resume_state(out, info.is_main)
                if not _plan_resume(cfg, state, out, args.epochs, info.is_main):
                    return 0
            _train(cfg, args, device, info, out, state)
        wait_for_all(info)  # a rank that tears gloo down while another still talks aborts
        return 0
    except Diverged as err:
        raise RunFailed(str(err)) from None
    except OSError as err:
        raise RunFailed(_os_error_message(err, out)) from None
    finally:
        shutdown(info)


def _default_out(cfg: Config) -> str:
    return f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _resume_state(out: Path, main_rank: bool) -> dict[str, Any]:
    """The checkpoint to continue from (``best.pt`` when ``last.pt`` is damaged), with a note."""
    from . import checkpoint as ckpt

    state, warning = ckpt.load_for_resume(out)
    if main_rank:
        if warning:
            print(warning, file=sys.stderr, flush=True)
        if ckpt.repair_best(out, state):
            print(f"rewrote {out / 'best.pt'} with the best epoch, {state['best_epoch']}")
    return state


def _plan_resume(
    cfg: Config, state: dict[str, Any], out: Path, epochs: int | None, main_rank: bool
) -> bool:
    """Set ``cfg`` to the epochs the resumed run trains to; ``False`` when none is left.

    ``--epochs N`` extends a run to N epochs: the only setting a resume may change. The
    schedules that depend on the length (cosine learning rate, masked PSN's λ ramp) then
    span the N epochs, and ``config.yaml`` records the new length.
    """
    from .trainer import save_config

    done = state["epoch"] + 1
    if epochs is not None and epochs < done:
        raise ConfigError(
            f"--epochs {epochs}: the run in {out} has already trained {done} epochs; "
            f"pass more than {done} to train it longer"
        )
    planned = cfg.train.epochs
    if epochs is not None:
        cfg.train.epochs = epochs
    if done >= cfg.train.epochs:
        if main_rank:
            print(_finished_message(state, out), flush=True)
        return False
    if main_rank:
        if cfg.train.epochs != planned:
            save_config(cfg, out)
            print(f"{out} now trains {cfg.train.epochs} epochs instead of {planned}")
        print(f"resuming {out} at epoch {done + 1} of {cfg.train.epochs}", flush=True)
    return True


def _finished_message(state: dict[str, Any], out: Path) -> str:
    """What ``--resume`` of a run that has trained all its epochs says."""
    done = state["epoch"] + 1
    final = state["history"][-1]["test_acc"] if state["history"] else float("nan")
    return (
        f"{out} has finished its {done} epochs (final test accuracy {final:.2f}%, best "
        f"{state['best_acc']:.2f}% at epoch {state['best_epoch']}); nothing to train. "
        f"To train it longer: --resume {out} --epochs N, with N > {done}"
    )


def _train(
    cfg: Config,
    args: argparse.Namespace,
    device: torch.device,
    info: DistInfo,
    out: Path,
    state: dict[str, Any] | None,
) -> None:
    """Build the trainer, restore ``state`` (a resume) or write the config (a new run), train."""
    from .checkpoint import CheckpointError
    from .trainer import Trainer, save_config

    trainer = Trainer(cfg, device, info, out)
    if state is not None:
        try:
            trainer.load_state(state)
        except (KeyError, RuntimeError, ValueError) as err:
            first_line = (str(err).strip() or type(err).__name__).splitlines()[0]
            raise CheckpointError(
                f"the checkpoint in {out} does not fit its config.yaml: {first_line}"
            ) from None
    elif info.is_main:
        save_config(cfg, out)
    trainer.run()


def _os_error_message(err: OSError, out: Path | None) -> str:
    """What failed, on which file, and what to do; the last checkpoint is never half-written."""
    where = f" ({err.filename})" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable"
    else:
        fix = "fix the cause"
    then = (
        f"then continue with --resume {out} (its last checkpoint is intact)"
        if out is not None and (out / "last.pt").exists()
        else "then start the run again"
    )
    return f"{err.strerror or err}{where}; {fix}, {then}"
