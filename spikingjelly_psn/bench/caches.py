"""How big the last cache in front of memory is, and how many rotated buffers overflow it."""

from __future__ import annotations

import math
from pathlib import Path

import torch

#: Rotated inputs (and copy sources) add up to at least this many times the last-level cache, so
#: every call reads its input from memory, not from what the previous call left in the cache.
ROTATION_FACTOR = 4
#: Assumed when the cache size cannot be read (a big server L3; a GPU reports its L2 always).
FALLBACK_CACHE_BYTES = 32 << 20
_CPU_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _parse_size(text: str) -> int:
    """``"32768K"`` -> bytes (sysfs writes sizes with a K, M or G suffix)."""
    text = text.strip()
    if text and text[-1].upper() in _UNITS:
        return int(text[:-1]) * _UNITS[text[-1].upper()]
    return int(text)


def cpu_last_level_cache_bytes(root: Path = _CPU_CACHES) -> int | None:
    """Size of the highest-level data or unified cache of CPU 0 (Linux sysfs); ``None`` if unknown."""
    best: tuple[int, int] | None = None
    for index in sorted(root.glob("index*")):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            size = _parse_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if best is None or level > best[0]:
            best = (level, size)
    return None if best is None else best[1]


def last_level_cache_bytes(device: torch.device) -> int:
    """The GPU's L2, or the CPU's last-level cache (:data:`FALLBACK_CACHE_BYTES` if unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).L2_cache_size)
    return cpu_last_level_cache_bytes() or FALLBACK_CACHE_BYTES


def rotation_count(nbytes: int, cache_bytes: int) -> int:
    """Buffers of ``nbytes`` to rotate so that together they hold ``ROTATION_FACTOR`` caches (2 at least)."""
    return max(2, math.ceil(ROTATION_FACTOR * cache_bytes / max(nbytes, 1)))
