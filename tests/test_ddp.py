"""Multi-process training through Lightning DDP on CPU (gloo backend)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simsurrogate.models import EGNN, GNN

SCRIPT = Path(__file__).with_name("ddp_fit.py")


@pytest.mark.parametrize("model", ["egnn", "gnn"])
def test_two_process_ddp_fit_keeps_ranks_identical(
    model: str, nbody_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(nbody_dir), str(tmp_path), model],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=key)
    if model == "gnn":
        # 32 systems x 5 particles x 2 epochs, seen half by each rank, summed over both
        assert float(w0["input_norm.count"]) == 2 * 32 * 5
    torch.manual_seed(100)
    cls = {"egnn": EGNN, "gnn": GNN}[model]
    init = cls(hidden=16, n_layers=2).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in init if k.endswith("weight"))  # trained
