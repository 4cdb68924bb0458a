"""``spikingjelly-psn``: the command-line entry point (``train`` and ``bench``)."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": (
        "spikingjelly_psn.train.cli",
        "train a model from a recipe (default: embedded digits)",
    ),
    "bench": ("spikingjelly_psn.bench.cli", "time the neurons and backends against SpikingJelly"),
}

USAGE = (
    "usage: spikingjelly-psn {train,bench} [options]   (spikingjelly-psn COMMAND --help)\n"
    + "\n".join(f"  {name:<6} {help_text}" for name, (_, help_text) in COMMANDS.items())
    + "\n  --version  print the versions of spikingjelly-psn, SpikingJelly and PyTorch"
)


def version_text() -> str:
    """This package's version and those of the libraries its results depend on."""
    from importlib.metadata import PackageNotFoundError, version

    import spikingjelly_psn

    parts = [f"spikingjelly-psn {spikingjelly_psn.__version__}"]
    for dist in ("spikingjelly", "torch"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(version_text())
        return 0
    if argv[0] not in COMMANDS:
        print(f"spikingjelly-psn: unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
