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
