"""``spikingjelly-psn bench``: speed, memory and bandwidth of every neuron and backend.

Run ``spikingjelly-psn bench --quick`` (or ``python -m spikingjelly_psn.bench --quick``); see
``docs/benchmarks.md`` for the method.
"""

from .cli import main

__all__ = ["main"]
