"""Shared fixtures: a small charged N-body dataset generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

# Tests use tiny models, for which one thread is as fast as two, and it keeps timings stable
# when other work shares the machine's cores.
torch.set_num_threads(1)

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


def rectangle_mesh(nx: int = 12, ny: int = 6) -> tuple:
    """Structured triangulation of [0, 1.2] x [0, 0.4]: mesh_pos (N, 2), cells (C, 3) CCW,
    node_type (N,): inflow at x = 0, outflow at x = 1.2, walls at y = 0 and 0.4."""
    import numpy as np

    from simsurrogate.data.node_types import NodeType

    x, y = np.meshgrid(np.linspace(0, 1.2, nx), np.linspace(0, 0.4, ny), indexing="ij")
    pos = np.stack([x.ravel(), y.ravel()], 1)
    idx = np.arange(nx * ny).reshape(nx, ny)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    cells = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    node_type = np.full(nx * ny, int(NodeType.NORMAL))
    node_type[pos[:, 0] == 1.2] = NodeType.OUTFLOW
    node_type[pos[:, 0] == 0] = NodeType.INFLOW
    node_type[(pos[:, 1] == 0) | (pos[:, 1] == 0.4)] = NodeType.WALL_BOUNDARY
    return pos, cells, node_type


def smoothing_trajectory(pos, cells, node_type, n_steps: int, seed: int) -> dict:
    """A learnable toy flow: velocity relaxes towards its neighbours' mean (boundary nodes
    held), pressure = |velocity|^2. Returns velocity (T, N, 2), pressure (T, N, 1) float32."""
    import numpy as np

    from simsurrogate.data.node_types import PREDICTED_TYPES
    from simsurrogate.graph import cells_to_edges

    rng = np.random.default_rng(seed)
    edges = cells_to_edges(cells).numpy()
    n = len(pos)
    deg = np.bincount(edges[1], minlength=n)[:, None]
    free = np.isin(node_type, PREDICTED_TYPES)[:, None]
    v = rng.normal(size=(n, 2)) * 0.5
    v[node_type == 6] = 0.0  # walls
    v[node_type == 4] = [1.0, 0.0]  # inflow
    vel = [v]
    for _ in range(n_steps - 1):
        mean = np.zeros_like(v)
        np.add.at(mean, edges[1], v[edges[0]])
        v = np.where(free, v + 0.3 * (mean / deg - v), v)
        vel.append(v)
    vel = np.asarray(vel, dtype=np.float32)
    return {"velocity": vel, "pressure": (vel**2).sum(-1, keepdims=True)}


@pytest.fixture(scope="session")
def mesh_dynamics_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train.h5 (4 trajectories), valid.h5 and test.h5 (1 each) of the toy smoothing flow,
    20 steps each, on a 12 x 6 rectangle mesh; dt = 0.01 s."""
    import numpy as np

    from simsurrogate.data.mesh import MeshWriter

    root = tmp_path_factory.mktemp("mesh_dynamics")
    pos, cells, node_type = rectangle_mesh()
    out, seed = {}, 0
    for split, count in (("train", 4), ("valid", 1), ("test", 1)):
        with MeshWriter(root / f"{split}.h5") as w:
            for _ in range(count):
                fields = smoothing_trajectory(pos, cells, node_type, 20, seed)
                w.add_trajectory(
                    mesh_pos=pos,
                    cells=cells,
                    node_type=node_type,
                    fields=fields,
                    time=np.arange(20) * 0.01,
                )
                seed += 1
        out[split] = root / f"{split}.h5"
    return out


# ---------------------------------------------------------------------- grid operators (NS)

ROOT = Path(__file__).resolve().parents[1]
#: snapshots a tiny Navier–Stokes operator sees
NS_HISTORY = 3


@pytest.fixture(scope="session")
def tiny_ns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny Navier–Stokes set: 16², 9 snapshots (t = 0..8), 6 train / 2 test trajectories."""
    from simsurrogate.sims.navier_stokes import NavierStokesConfig, generate_navier_stokes

    config = NavierStokesConfig(
        t_final=8.0, dt=0.05, resolution=16, stored_resolution=16, scheme="heun"
    )
    return generate_navier_stokes(
        tmp_path_factory.mktemp("ns"), n_train=6, n_test=2, config=config, progress=False
    )


def tiny_fno(**kw):
    """An FNO from NS_HISTORY snapshots to one, small enough for tests."""
    from simsurrogate.models import FNO

    torch.manual_seed(0)
    args = {"modes": [4, 4], "width": 8, "n_layers": 2, "lifting_channels": 8}
    return FNO(NS_HISTORY, 1, **{**args, "projection_channels": 8, **kw})


def fit_ns_recipe(tiny_ns: dict[str, Path], recipe: str, out: Path, *overrides: str) -> Path:
    """Two epochs of an NS recipe on the tiny set, shrunk to the tiny grid; the checkpoint."""
    from simsurrogate.cli import main

    main(
        [
            "fit",
            "--config",
            str(ROOT / "recipes" / "operators" / recipe),
            "--trainer.max_epochs",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger",
            "false",
            "--trainer.default_root_dir",
            str(out),
            "--trainer.callbacks",
            "[]",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.dirpath",
            str(out / "ckpt"),
            "--trainer.callbacks.filename",
            "last",
            "--model.init_args.model.init_args.in_channels",
            str(NS_HISTORY),
            "--model.init_args.model.init_args.width",
            "6",
            "--model.init_args.model.init_args.lifting_channels",
            "8",
            "--model.init_args.model.init_args.projection_channels",
            "8",
            "--data.init_args.train",
            str(tiny_ns["train"]),
            "--data.init_args.test",
            str(tiny_ns["test"]),
            "--data.init_args.history",
            str(NS_HISTORY),
            "--data.init_args.horizon",
            "4",
            "--data.init_args.batch_size",
            "2",
            "--data.init_args.val_fraction",
            "0.34",
            *overrides,
        ]
    )
    return out / "ckpt" / "last.ckpt"
