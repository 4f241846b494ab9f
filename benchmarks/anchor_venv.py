"""Separate virtual environments for reference packages that benchmarks compare against.

An anchor package never goes into the project's own venv: it gets one under ``out/venvs/``,
built with torch 2.13.0 installed first and everything else under ``-c constraints.txt``, so
pip cannot replace torch with another build (or pull CUDA wheels). torchvision is refused: its
registry builds do not load with this torch.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_VERSION = "2.13.0"


def anchor_python(venv: Path, requirements: Sequence[str], probe: str) -> Path:
    """The venv's python, building the venv first if it is missing or ``probe`` fails there.

    Args:
        venv: where the venv lives (e.g. ``out/venvs/neuralop``).
        requirements: pip requirement strings installed after torch, under the constraints.
        probe: Python code that must run in the venv (e.g. ``"import neuralop, torch"``).
    """
    python = venv / "bin" / "python"
    check = [str(python), "-c", probe]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"building the anchor venv at {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip", "setuptools>=77.0.3", "wheel"], check=True)
    subprocess.run([*pip, f"torch=={TORCH_VERSION}"], check=True)
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), *requirements], check=True)
    shown = subprocess.run([str(python), "-m", "pip", "show", "torchvision"], capture_output=True)
    if shown.returncode == 0:
        raise SystemExit(f"torchvision got into {venv}; it does not load with this torch")
    subprocess.run(check, check=True)
    return python
