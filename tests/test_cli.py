"""The ``spikingjelly-psn`` entry point dispatches to its subcommands."""

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

import spikingjelly_psn
from spikingjelly_psn.cli import main

ROOT = Path(__file__).resolve().parents[1]


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


def test_version_option(capsys):
    assert main(["--version"]) == 0
    printed = capsys.readouterr().out
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert printed.startswith(f"spikingjelly-psn {setup['metadata']['version']}, ")
    assert spikingjelly_psn.__version__ == setup["metadata"]["version"]
    assert "spikingjelly 2." in printed and "torch " in printed


def test_python_dash_m_package_is_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "spikingjelly_psn", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.startswith("spikingjelly-psn ")
