"""``spikingjelly-psn bench``: options, the sweep, and its outputs (CSV, markdown, PNG)."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from spikingjelly_psn import catalog
from spikingjelly_psn.arg_types import non_negative_int, positive_int, positive_ints

QUICK = {"Ts": [4, 8], "Ns": [4096, 16384], "dtypes": ["fp32"], "rounds": 51, "warmup": 2}
QUICK_CPU_THREADS = 1
FULL = {
    "Ts": [4, 8, 16, 32, 64],
    "Ns": [1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24],
    "dtypes": ["fp32", "fp16"],
    "rounds": 100,
    "warmup": 10,
}
DTYPE_NAMES = {
    "fp32": "fp32",
    "float32": "fp32",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
}


def _choices(allowed: tuple[str, ...], aliases: dict[str, str] | None = None) -> Callable:
    """An argparse type: a comma-separated list drawn from ``allowed`` (``all`` = every one)."""

    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        if items == ["all"]:
            return list(allowed)
        out = []
        for item in items:
            name = (aliases or {}).get(item.lower(), item.lower())
            if name not in allowed:
                raise argparse.ArgumentTypeError(
                    f"unknown value {item!r}; choose from {', '.join(allowed)} (comma-separated)"
                )
            out.append(name)
        if not out:
            raise argparse.ArgumentTypeError("the list is empty")
        return list(dict.fromkeys(out))

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The option parser of ``spikingjelly-psn bench``."""
    from .cases import NEURONS, PLUGIN_BACKENDS

    p = argparse.ArgumentParser(
        prog="spikingjelly-psn bench",
        description="Speed, memory and bandwidth of the PSN family against SpikingJelly's neurons.",
    )
    p.add_argument(
        "--neurons",
        type=_choices(NEURONS),
        default=list(NEURONS),
        help=f"comma-separated, from {', '.join(NEURONS)} (default: all)",
    )
    p.add_argument(
        "--backends",
        type=_choices(PLUGIN_BACKENDS),
        default=list(PLUGIN_BACKENDS),
        help=f"backends of the plugin neurons (default: {','.join(PLUGIN_BACKENDS)}); "
        "baselines always run on SpikingJelly's own",
    )
    p.add_argument(
        "--dtypes",
        type=_choices(("fp32", "fp16", "bf16"), DTYPE_NAMES),
        help="default fp32,fp16 (--quick: fp32)",
    )
    p.add_argument(
        "--T",
        dest="Ts",
        type=positive_ints,
        metavar="T[,T...]",
        help="time-steps (default 4,8,16,32,64; --quick: 4,8)",
    )
    p.add_argument(
        "--N",
        dest="Ns",
        type=positive_ints,
        metavar="N[,N...]",
        help="neurons per time-step N' (default 2^16,2^18,...,2^24; --quick: 4096,16384)",
    )
    p.add_argument(
        "--k",
        type=positive_int,
        default=4,
        help="order of masked/sliding PSN and MFPSN (masked uses min(k, T)); default 4",
    )
    p.add_argument("--dilation", type=positive_int, default=1, help="MFPSN dilation; default 1")
    p.add_argument(
        "--channels",
        type=positive_int,
        default=64,
        help="MFPSN channels C; its input is [T, B, C, H, W] with B*C*H*W = N' (default 64)",
    )
    p.add_argument(
        "--mfpsn-threshold",
        choices=("bn", "learnable"),
        default="bn",
        help="MFPSN threshold (default bn, the paper's)",
    )
    p.add_argument(
        "--mode",
        choices=("inference", "training", "both"),
        default="both",
        help="inference = no-grad forward; training = forward + backward (default both)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="output directory (default ./bench-results)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a few small sizes: seconds on a CPU (explicit options still win)",
    )
    p.add_argument(
        "--rounds",
        "--repeats",
        dest="rounds",
        type=positive_int,
        help="rounds; each times every case of a (dtype, T, N', mode) once, in a shuffled order "
        "(default 100; --quick 51)",
    )
    p.add_argument(
        "--warmup",
        type=non_negative_int,
        help="untimed calls after the first (default 10; --quick 2)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads of PyTorch (default: PyTorch's; --quick on a CPU: 1, which "
        "keeps timings stable on a shared machine)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random inputs and the round order (default 0)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _device(text: str | None):
    import torch

    from ..devices import parse_device

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return parse_device(text)


def _check_writable(out: Path) -> None:
    """Create ``out`` and write a probe there, so a sweep never ends unable to save its results."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(
            f"--out {out}: cannot write there ({err.strerror}); pass a writable folder"
        ) from None


def config_from(args: argparse.Namespace):
    """The sweep configuration: defaults (full or quick) filled in and checked."""
    from .runner import MODES, SweepConfig

    defaults = QUICK if args.quick else FULL
    Ns = args.Ns or defaults["Ns"]
    for plugin in map(catalog.by_bench_name, args.neurons):
        bad = [n for n in Ns if n % args.channels]
        if plugin is not None and plugin.feature_map_input and bad:
            raise ValueError(
                f"--N {','.join(map(str, bad))}: {plugin.name} needs N' to be a multiple of "
                f"--channels {args.channels}"
            )
    return SweepConfig(
        neurons=args.neurons,
        backends=args.backends,
        dtypes=args.dtypes or defaults["dtypes"],
        Ts=args.Ts or defaults["Ts"],
        Ns=Ns,
        modes=list(MODES) if args.mode == "both" else [args.mode],
        k=args.k,
        dilation=args.dilation,
        channels=args.channels,
        mfpsn_threshold=args.mfpsn_threshold,
        rounds=args.rounds or defaults["rounds"],
        warmup=defaults["warmup"] if args.warmup is None else args.warmup,
        device=_device(args.device),
        progress=not args.no_progress,
        seed=args.seed,
    )


def _summary(rows: list[dict[str, object]], files: list[Path]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
    lif = next((r["impl"] for r in rows if r["neuron"] == "lif" and r["status"] == "ok"), None)
    lines = [
        f"device: {rows[0]['device_name']}" if rows else "no rows",
        "rows: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
    ]
    if lif:
        lines.append(f"LIF baseline: spikingjelly LIFNode(step_mode='m'), implementation {lif!r}")
    lines += [f"wrote {f}" for f in files]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 if a row failed with an error, 2 on bad options."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and the error
        return int(exc.code or 0)
    try:
        cfg = config_from(args)
        _check_writable(args.out)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2

    import torch

    from .environment import run_info
    from .plots import plot_all
    from .report import markdown_table, write_csv
    from .runner import run_sweep

    threads = args.threads
    if threads is None and args.quick and cfg.device.type == "cpu":
        threads = QUICK_CPU_THREADS
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    out: Path = args.out
    command = shlex.join(["spikingjelly-psn", "bench", *argv])
    rows = run_sweep(cfg, run_info(cfg.device, command))
    table = markdown_table(rows)
    print(table)  # first: the results reach the screen even if the files cannot be written
    print()
    files = [out / "results.csv", out / "results.md"]
    try:
        write_csv(rows, files[0])
        files[1].write_text(table + "\n", encoding="utf-8")
        files += plot_all(rows, out)
    except OSError as err:
        print(
            f"{parser.prog}: error: cannot write {err.filename or out} ({err.strerror}); "
            f"the table above holds the results",
            file=sys.stderr,
        )
        return 1
    print(_summary(rows, files))
    return 1 if any(r["status"] == "error" for r in rows) else 0
