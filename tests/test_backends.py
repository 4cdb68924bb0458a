"""The backend seam (``spikingjelly_psn.ops.backends``): what every backend declares, and who reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikingjelly_psn.bench.cases import PLUGIN_BACKENDS
from spikingjelly_psn.neuron import MFPSN
from spikingjelly_psn.ops import backends
from spikingjelly_psn.train.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", backends.names())
def test_every_backend_declares_itself(name):
    module = backends.get(name)
    assert name == module.NAME
    assert module.OPS and all(callable(getattr(module, op)) for op in module.OPS)
    assert isinstance(module.SINGLE_STEP, bool)
    assert all(isinstance(req, str) for reqs in module.EXTRAS.values() for req in reqs)
    missing = module.missing_library()
    assert missing is None or "pip install" in missing
    reason = module.unavailable_reason(torch.device("cpu"))
    assert reason is None or (isinstance(reason, str) and reason)


def test_the_default_runs_everywhere_and_single_steps():
    assert backends.default() == "torch" == backends.names()[0]
    assert backends.single_step_names() == ("torch",)
    assert backends.unavailable_reason("torch", torch.device("cpu")) is None


def test_an_unknown_backend_or_op_is_not_implemented():
    with pytest.raises(NotImplementedError, match="backend='triton' is unknown; choose one of"):
        backends.get("triton")
    with pytest.raises(NotImplementedError, match="does not implement no_such_op"):
        backends.op("no_such_op", "torch")


def test_the_neurons_the_config_and_the_bench_read_the_seam():
    assert MFPSN(2, step_mode="m").supported_backends == backends.names() == PLUGIN_BACKENDS
    for name in backends.names():
        assert load_config(overrides=[f"neuron.backend={name}"]).neuron.backend == name
    choices = " or ".join(repr(name) for name in backends.names())
    with pytest.raises(ConfigError, match=f"neuron.backend must be {choices}, got 'cuda'"):
        load_config(overrides=["neuron.backend=cuda"])


def test_the_pip_extras_are_the_backends_declared_extras(tmp_path):
    subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    requires = (tmp_path / "spikingjelly_psn.egg-info" / "requires.txt").read_text()
    libraries = []
    for name in backends.names():
        for extra, requirements in backends.get(name).EXTRAS.items():
            assert f"[{extra}]\n" + "".join(f"{r}\n" for r in requirements) in requires
        libraries += backends.get(name).EXTRAS.get(name, [])
    # test and dev install each backend's own extra (the one named after it)
    assert (
        "[test]\n" + "".join(f"{r}\n" for r in ["pytest>=8", "hypothesis>=6", *libraries])
        in requires
    )
