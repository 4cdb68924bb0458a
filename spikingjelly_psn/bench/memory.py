"""Memory of one call: bytes allocated, the CUDA peak-allocation delta, and what autograd saves."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch


def saved_tensor_bytes(call: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd keeps for backward while ``call()`` runs.

    This is the activation memory the layer adds to a network in training (0 under ``no_grad``).
    A storage saved twice (or through two views) is counted once.
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        call()
    return sum(storages.values())


def allocated_bytes(call: Callable[[], object], device: torch.device) -> int:
    """Total bytes of every allocation on ``device`` while ``call()`` runs, frees not subtracted.

    Read from the PyTorch profiler's memory events, so it works on a CPU as on a GPU. A
    temporary counts in full each time it is allocated: this is the allocator traffic of the call
    (an implementation that allocates one ``[T, N']`` tensor per op scores high), not its peak.
    """
    from torch.autograd.profiler import profile

    # without it, the profiler's tracing library logs a CUDA-probe error on machines with no GPU
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    with profile(profile_memory=True) as prof:
        call()
    index = device.index if device.index is not None else -1
    if device.type == "cuda" and device.index is None:
        index = torch.cuda.current_device()
    return sum(
        event.nbytes()
        for event in prof.kineto_results.events()
        if event.name() == "[memory]"
        and event.nbytes() > 0
        and event.device_type().name.lower() == device.type
        and (device.type == "cpu" or event.device_index() == index)
    )


def cuda_peak_delta(call: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated above the starting level during ``call()`` (outputs included).

    ``None`` off CUDA, where PyTorch keeps no allocation peak.
    """
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    result = call()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del result
    return max(peak, 0)


def available_bytes(device: torch.device) -> int | None:
    """Bytes that new tensors on ``device`` can still take; ``None`` where that is unknown.

    CUDA: the driver's free memory plus what PyTorch's allocator holds unused. CPU: Linux's
    ``MemAvailable``.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
