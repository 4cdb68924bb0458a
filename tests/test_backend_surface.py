"""The backend surface (docs/design.md §2): property, setter, set_backend, CuPy errors; registration."""

import logging
import subprocess
import sys
import textwrap

import pytest
import torch
from nets import CLASSES, make_input, make_net, make_neuron, ready
from spikingjelly.activation_based import functional
from spikingjelly.activation_based import neuron as sj_neuron

import spikingjelly_psn
from spikingjelly_psn import MFPSN, PSN, MaskedPSN, SlidingPSN, set_backend
from spikingjelly_psn.ops import backends

ALL = [
    lambda: PSN(4),
    lambda: MaskedPSN(2, 4, step_mode="m"),
    lambda: SlidingPSN(2, step_mode="m"),
    lambda: MFPSN(2, step_mode="m"),
]


@pytest.mark.parametrize("make", ALL)
def test_backend_property_and_supported_backends(make):
    neuron = make()
    assert neuron.backend == "torch"
    assert neuron.supported_backends == backends.names()
    assert "backend=torch" in repr(neuron) and "step_mode=m" in repr(neuron)
    with pytest.raises(NotImplementedError, match="backend='triton' is unknown; choose one of"):
        neuron.backend = "triton"


def test_default_step_modes_follow_spikingjelly():
    """Single-step by default, as every SpikingJelly neuron; PSN is multi-step only."""
    assert PSN(4).step_mode == sj_neuron.PSN(4).supported_step_mode()[0] == "m"
    assert MaskedPSN(2, 4).step_mode == sj_neuron.MaskedPSN(2, 4).step_mode == "s"
    assert SlidingPSN(2).step_mode == sj_neuron.SlidingPSN(2).step_mode == "s"
    assert MFPSN(2).step_mode == "s"


def test_single_step_supports_torch_only_and_says_how_to_get_cupy():
    neuron = SlidingPSN(2)
    assert neuron.supported_backends == ("torch",)
    with pytest.raises(
        NotImplementedError, match="step_mode='s'.*construct the neuron with step_mode='m'"
    ):
        neuron.backend = "cupy"


def test_missing_cupy_raises_import_error_with_install_hint(cupy_missing):
    with pytest.raises(ImportError, match=r"pip install \"spikingjelly-psn\[cupy13\]\""):
        SlidingPSN(2, step_mode="m", backend="cupy")
    net = torch.nn.Sequential(SlidingPSN(2, step_mode="m"), MFPSN(2, step_mode="m"))
    with pytest.raises(ImportError, match="pip install"):
        set_backend(net, "cupy")
    assert [m.backend for m in net] == ["torch", "torch"]


def test_cupy_backend_on_cpu_tensors_says_so(cupy_installed):
    neuron = PSN(3, backend="cupy")
    with pytest.raises(RuntimeError, match=r"backend=.cupy. runs on CUDA tensors.*\.cuda\(\)"):
        neuron(torch.randn(3, 2))


def test_set_backend_sets_supported_and_warns_for_the_rest(cupy_installed, caplog):
    sliding = SlidingPSN(2, step_mode="s")
    net = torch.nn.Sequential(
        PSN(4), MaskedPSN(2, 4, step_mode="m"), sliding, torch.nn.Linear(2, 2)
    )
    with caplog.at_level(logging.WARNING):
        set_backend(net, "cupy")
    assert [m.backend for m in net[:2]] == ["cupy", "cupy"]
    assert (
        sliding.backend == "torch" and "SlidingPSN does not support backend='cupy'" in caplog.text
    )
    set_backend(net, "torch", instance=PSN)
    assert net[0].backend == "torch" and net[1].backend == "cupy"


def test_set_step_mode_reaches_the_neurons():
    net = torch.nn.Sequential(MaskedPSN(2, 4), SlidingPSN(2), MFPSN(2))
    functional.set_step_mode(net, "m")
    assert [m.step_mode for m in net] == ["m", "m", "m"]
    functional.set_step_mode(net, "s")
    assert [m.step_mode for m in net] == ["s", "s", "s"]
    with pytest.raises(ValueError, match="multi-step"):
        functional.set_step_mode(torch.nn.Sequential(PSN(4)), "s")


def test_import_is_light_and_never_touches_cupy_or_cuda():
    """The package import loads no torch; building and running every neuron, and importing the
    cupy backend, load no CuPy and initialise no CUDA."""
    code = textwrap.dedent(
        """
        import sys
        import spikingjelly_psn
        assert "torch" not in sys.modules, "torch imported by the package import"
        import torch
        import spikingjelly_psn.ops.cupy
        x = torch.randn(4, 2, 3, 5)
        for n in (spikingjelly_psn.PSN(4), spikingjelly_psn.MaskedPSN(2, 4, step_mode="m"),
                  spikingjelly_psn.SlidingPSN(2, step_mode="m"),
                  spikingjelly_psn.MFPSN(2, step_mode="m")):
            n(x)
        assert "cupy" not in sys.modules, "cupy imported"
        assert not torch.cuda.is_initialized(), "CUDA initialised"
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("cls", CLASSES)
def test_set_backend(cls: type) -> None:
    net = make_net(cls)
    neurons = [m for m in net.modules() if isinstance(m, cls)]
    spikingjelly_psn.set_backend(net, "torch")
    assert [m.backend for m in neurons] == ["torch", "torch"]
    with pytest.raises(NotImplementedError, match="backend='no-such-backend' is unknown"):
        spikingjelly_psn.set_backend(net, "no-such-backend")
    assert [m.backend for m in neurons] == ["torch", "torch"]
    with pytest.raises(NotImplementedError, match="no-such-backend"):
        neurons[0].backend = "no-such-backend"
    with pytest.raises(NotImplementedError, match="no-such-backend"):
        make_neuron(cls, backend="no-such-backend")
    if backends.missing_library("cupy") is not None:
        with pytest.raises(ImportError, match="pip install"):
            spikingjelly_psn.set_backend(net, "cupy", instance=cls)
        return
    spikingjelly_psn.set_backend(net, "cupy", instance=cls)
    assert [m.backend for m in neurons] == ["cupy", "cupy"]
    with pytest.raises(RuntimeError, match="cupy.*CUDA"):  # CPU tensors
        ready(net, make_input())
