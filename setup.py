"""The pip extras, derived from the backends' own declarations (setup.cfg holds the rest).

Each backend package listed in ``spikingjelly_psn/ops/backends.py`` declares ``EXTRAS``; they
are read here as literals, without importing the package (which needs torch).
"""

from __future__ import annotations

import ast
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
TEST_REQUIREMENTS = ["pytest>=8", "hypothesis>=6"]
DEV_REQUIREMENTS = ["ruff"]


def assigned_literal(path: Path, name: str):
    """The literal value assigned to ``name`` at the top level of ``path``."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == name:
            return ast.literal_eval(node.value)
    raise LookupError(f"{path} assigns no literal {name}")


def extras() -> dict[str, list[str]]:
    """Every backend's extras; ``test`` and ``dev`` also install each backend's own extra."""
    packages = assigned_literal(ROOT / "spikingjelly_psn" / "ops" / "backends.py", "PACKAGES")
    found: dict[str, list[str]] = {}
    libraries: list[str] = []
    for package in packages:
        init = ROOT.joinpath(*package.split(".")) / "__init__.py"
        declared = assigned_literal(init, "EXTRAS")
        found.update(declared)
        libraries += declared.get(assigned_literal(init, "NAME"), [])
    found["test"] = TEST_REQUIREMENTS + libraries
    found["dev"] = TEST_REQUIREMENTS + libraries + DEV_REQUIREMENTS
    return found


setup(extras_require=extras())
