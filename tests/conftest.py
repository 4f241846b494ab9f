"""Shared fixtures: a small charged N-body dataset generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "equivariant" / "nbody_egnn.yaml"


@pytest.fixture(scope="session")
def nbody_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small N-body dataset (64/32/32 systems, full 49-frame trajectories)."""
    from simsurrogate.sims.nbody import generate_nbody

    root = tmp_path_factory.mktemp("nbody")
    generate_nbody(root, n_train=64, n_valid=32, n_test=32, seed=0, progress=False)
    return root


def small_args(nbody_dir: Path, out: Path) -> list[str]:
    return [
        "--config",
        str(RECIPE),
        "--trainer.max_epochs",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger",
        "false",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(out / "ckpt"),
        "--trainer.callbacks.filename",
        "best",
        "--trainer.callbacks.monitor",
        "val/mse",
        "--model.init_args.model.init_args.hidden",
        "16",
        "--model.init_args.model.init_args.predict_velocity",
        "true",
        "--data.init_args.root",
        str(nbody_dir),
        "--data.init_args.batch_size",
        "16",
        "--data.init_args.max_train_samples",
        "32",
    ]


@pytest.fixture(scope="session")
def trained(nbody_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fit through the CLI on the recipe with small overrides; return the best checkpoint."""
    out = tmp_path_factory.mktemp("fit")
    config = yaml.safe_load(RECIPE.read_text())
    config["trainer"]["callbacks"] = []
    recipe = out / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(config))
    args = small_args(nbody_dir, out)
    args[1] = str(recipe)
    from simsurrogate.cli import main

    main(["fit", *args])
    return out / "ckpt" / "best.ckpt"
