"""The documented install leaves a consistent PyTorch set: SpikingJelly's datasets import."""

import subprocess
import sys


def test_spikingjelly_datasets_import():
    """torchaudio and torchvision must match torch's build, or this import fails."""
    code = "import spikingjelly.datasets, torchvision, torchaudio; print(torchvision.__version__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
