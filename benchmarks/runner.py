"""Shared by the benchmark scripts: run a recipe's fit + test through the real CLI, resumably."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml


def launch_recipe(
    recipe: Path, out: Path, settings: dict, extra: Sequence[str] = ()
) -> subprocess.Popen | None:
    """Start ``simsurrogate fit`` then ``test`` (best checkpoint) in a background shell, one thread.

    ``settings`` is written to ``out/override.yaml`` as a second recipe layer (output paths,
    epochs); ``extra`` are further CLI flags. Returns None when ``out`` already holds a finished
    run with the same settings, so an interrupted benchmark resumes where it stopped; otherwise
    the fit starts afresh, after removing ``out/checkpoints`` (Lightning would save next to an
    earlier run's ``best.ckpt`` as ``best-v1.ckpt`` and the test would score the old one). The
    test run logs only its metrics JSON (``out/test_metrics.json``), keeping the fit's CSV log
    intact.
    """
    out.mkdir(parents=True, exist_ok=True)
    layer = out / "override.yaml"
    text = yaml.safe_dump(settings)
    done = out / "test_metrics.json"
    if done.exists() and layer.exists() and layer.read_text() == text:
        return None
    done.unlink(missing_ok=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    layer.write_text(text)
    sims = [sys.executable, "-m", "simsurrogate.cli"]
    common = ["--config", str(recipe), "--config", str(layer), *extra]
    fit = sims + ["fit", *common]
    test = sims + ["test", *common, "--trainer.logger", "false"]
    test += ["--ckpt_path", str(out / "checkpoints" / "best.ckpt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    script = f"{subprocess.list2cmdline(fit)} && {subprocess.list2cmdline(test)}"
    log = open(out / "run.log", "w")
    return subprocess.Popen(script, shell=True, env=env, stdout=log, stderr=subprocess.STDOUT)
