"""The mace-torch anchor shared by the potential benchmarks.

mace-torch pins e3nn 0.4.4, so it lives in its own venv (``out/venvs/mace``: ``python -m venv
out/venvs/mace && out/venvs/mace/bin/pip install torch==2.13.0 && out/venvs/mace/bin/pip
install -c constraints.txt mace-torch``). A benchmark writes a small script that runs there,
imports :func:`build_mace` from this file and prints one JSON line; :func:`run_in_mace_venv`
runs it and returns that line. This module imports nothing from mace at import time, so both
sides can import it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: first lines of every anchor script: lets it import this module from the mace venv
PRELUDE = f"import sys\nsys.path.insert(0, {str(HERE)!r})\nfrom mace_anchor import build_mace\n"


def build_mace(cfg: dict[str, Any]) -> Any:
    """A float32 ``ScaleShiftMACE`` sized like our NequIP-class model (inside the mace venv).

    ``cfg``: ``numbers`` (atomic numbers), ``cutoff`` (Å), ``lmax``, ``channels``,
    ``n_interactions``, ``avg_num_neighbors``; correlation order 3 (MACE's default), 8 Bessel
    functions, zero reference energies, seed 0.
    """
    import numpy as np
    import torch
    from e3nn import o3
    from mace.modules import RealAgnosticResidualInteractionBlock, ScaleShiftMACE

    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    zs = cfg["numbers"]
    channels = cfg["channels"]
    return ScaleShiftMACE(
        r_max=cfg["cutoff"],
        num_bessel=8,
        num_polynomial_cutoff=6,
        max_ell=cfg["lmax"],
        interaction_cls=RealAgnosticResidualInteractionBlock,
        interaction_cls_first=RealAgnosticResidualInteractionBlock,
        num_interactions=cfg["n_interactions"],
        num_elements=len(zs),
        hidden_irreps=o3.Irreps(f"{channels}x0e+{channels}x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(zs)),
        avg_num_neighbors=cfg["avg_num_neighbors"],
        atomic_numbers=zs,
        correlation=3,
        gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )


def run_in_mace_venv(python: Path, script: Path, body: str, cfg: dict[str, Any]) -> dict:
    """Write ``PRELUDE + body`` to ``script``, run it with the mace venv's ``python`` and
    ``cfg`` as its JSON argument on one thread; return the JSON of its last output line."""
    script.write_text(PRELUDE + body)
    # e3nn 0.4.4 (pinned by mace-torch) loads its own constants with a bare torch.load, which
    # torch >= 2.6 refuses under weights_only=True; the files are the package's own
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(python), str(script), json.dumps(cfg)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"MACE run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
