"""The ``spikingjelly-psn`` entry point dispatches to its subcommands."""

import subprocess
import sys

import pytest

from spikingjelly_psn.cli import main


def test_usage_and_unknown_command(capsys):
    assert main([]) == 0
    assert "spikingjelly-psn {train,bench}" in capsys.readouterr().out
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "bench"])
def test_subcommand_help(command, capsys):
    try:
        code = main([command, "--help"])
    except SystemExit as stop:  # argparse exits after printing help
        code = stop.code
    assert code in (0, None)
    assert "--out" in capsys.readouterr().out


def test_console_script_is_installed():
    proc = subprocess.run(
        [sys.executable, "-m", "spikingjelly_psn.cli", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "train" in proc.stdout
