"""Fixtures shared by the test files."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import torch


def _states_equal(a: Mapping, b: Mapping) -> list[str]:
    """Keys whose values differ between two state_dicts (tensors bit for bit, extras by ==)."""
    if a.keys() != b.keys():
        return sorted(set(a) ^ set(b))
    return [
        key
        for key, value in a.items()
        if not (torch.equal(value, b[key]) if isinstance(value, torch.Tensor) else value == b[key])
    ]


@pytest.fixture
def state_differences() -> Callable[[Mapping, Mapping], list[str]]:
    """``state_differences(a, b)``: the keys of two state_dicts that differ (empty when equal)."""
    return _states_equal


@pytest.fixture
def cupy_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cupy backend's library check passes, whether or not CuPy is installed here."""
    import spikingjelly_psn.ops.cupy as cupy_backend

    monkeypatch.setattr(cupy_backend, "missing_library", lambda: None)


@pytest.fixture
def cupy_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cupy backend's library check fails as it does without CuPy, with its install hint."""
    import spikingjelly_psn.ops.cupy as cupy_backend

    monkeypatch.setattr(cupy_backend, "missing_library", lambda: cupy_backend.CUPY_MISSING)
