"""The byte count that defines achieved bandwidth (docs/design.md §4).

One *pass* reads or writes one ``[T, N']`` tensor. The counts below are the fewest passes each op
needs, so ``bytes / time`` measures how close an implementation gets to the memory floor, whatever
it does internally. LIF has the same floor as the PSN family (read x, write s; read grad_s, read one
saved tensor, write grad_x), so every neuron is measured against the same yardstick.
"""

from __future__ import annotations

from spikingjelly_psn import catalog

FORWARD_PASSES = 2
BACKWARD_PASSES = 3
BN_STATS_FORWARD_PASSES = 1
BN_STATS_BACKWARD_PASSES = 2


def passes(neuron: str, mode: str, mfpsn_threshold: str = "bn") -> int:
    """Passes over ``[T, N']`` of one call: a forward (inference) or a forward + backward (training).

    A neuron with batch-norm statistics (MFPSN's ``bn`` threshold) reads x once more for its statistics in training, and
    grad_s and x once more for their gradient; in eval it uses running statistics (no extra pass).
    """
    if mode not in ("inference", "training"):
        raise ValueError(f"mode must be 'inference' or 'training', got {mode!r}")
    plugin = catalog.by_bench_name(neuron)
    bn = plugin is not None and plugin.bn_statistics(mfpsn_threshold)
    if mode == "inference":
        return FORWARD_PASSES
    extra = BN_STATS_FORWARD_PASSES + BN_STATS_BACKWARD_PASSES if bn else 0
    return FORWARD_PASSES + BACKWARD_PASSES + extra


def bytes_moved(n_passes: int, T: int, n_prime: int, itemsize: int) -> int:
    """Bytes of ``n_passes`` passes over a ``[T, N']`` tensor of ``itemsize``-byte elements."""
    return n_passes * T * n_prime * itemsize
