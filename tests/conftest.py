"""Fixtures shared by the test files, and the skip of ``cuda`` tests where no GPU runs CuPy."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import torch


def _gpu_ready() -> bool:
    """Whether the cupy backend can run here: CuPy importable and a usable CUDA GPU."""
    from spikingjelly_psn.ops import backends

    cuda = torch.device("cuda")
    return torch.cuda.is_available() and backends.unavailable_reason("cupy", cuda) is None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``cuda`` unless a GPU runs CuPy (decided once, not per file)."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if cuda_items and not _gpu_ready():
        skip = pytest.mark.skip(reason="needs CuPy with a CUDA GPU (cupy.is_available())")
        for item in cuda_items:
            item.add_marker(skip)


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


@pytest.fixture
def seeded() -> None:
    """Seed torch's global generator, so a test's random inputs are the same on every run."""
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def cupy_kernel_log():
    """CPU kernels for the cupy backend's custom ops, and the launcher's launches emulated, while
    one test module runs (tests/cupy_support/cpu_glue.py); undone afterwards."""
    from cupy_support.cpu_glue import KernelLog, cpu_kernels
    from cupy_support.emulation import Emulator, build, compiler

    if compiler() is None:
        pytest.skip("g++ is not installed (it compiles the kernels for the CPU)")

    from spikingjelly_psn.ops.cupy import _launch, _ops

    log = KernelLog()
    library = torch.library.Library(_ops.NAMESPACE, "IMPL")
    real_launch, _launch.launch = _launch.launch, Emulator(build()).launch
    try:
        for name, fn in cpu_kernels(log).items():
            library.impl(name, fn, "CPU")
        yield log
    finally:
        _launch.launch = real_launch
        library._destroy()


@pytest.fixture
def cpu_glue(cupy_kernel_log, monkeypatch: pytest.MonkeyPatch, cupy_installed: None):
    """The cupy backend accepting CPU tensors (its kernels emulated), for one test; the log of
    the kernel calls it made."""
    from cupy_support.cpu_glue import check_without_device

    import spikingjelly_psn.ops.cupy as cupy_backend

    monkeypatch.setattr(cupy_backend, "_check", check_without_device)
    monkeypatch.setattr(cupy_backend, "_DETERMINISTIC", False)
    cupy_kernel_log.clear()
    return cupy_kernel_log


class Interrupted(RuntimeError):
    """A run stopped from outside (a kill), raised by :func:`interrupt_training`."""


@pytest.fixture
def interrupt_training(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], type[Interrupted]]:
    """``interrupt_training(n)``: training raises :class:`Interrupted` right after its n-th
    batch, as a kill would stop it; returns the exception type to expect."""
    from spikingjelly_psn.train import steps

    def after(batches: int) -> type[Interrupted]:
        step, done = steps.train_step, [0]

        def counted(kit, x, y):
            result = step(kit, x, y)
            done[0] += 1
            if done[0] >= batches:
                raise Interrupted(f"stopped after {batches} batches")
            return result

        monkeypatch.setattr(steps, "train_step", counted)
        return Interrupted

    return after
