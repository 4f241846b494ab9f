"""CylinderFlow-style dataset: many FEM trajectories of flow past a cylinder, in the mesh schema.

Each trajectory draws the obstacle centre and radius and the mean inflow speed (so the
Reynolds number u_mean D / ν varies), meshes the channel, solves with
:func:`~simsurrogate.sims.cylinder_flow.simulate` and stores velocity and pressure at every
mesh vertex and saved step, as MeshGraphNets' CylinderFlow (about 2,000 nodes, 600 steps,
dt = 0.01 s).

Work is split per trajectory over worker processes. Each finished trajectory is written to
its own part file ``<out>/parts/<split>/<index>.h5`` (atomically), so a killed run keeps every
finished trajectory and a re-run only solves the missing ones. When every part of a split
exists they are merged into ``<out>/<split>.h5`` and the parts are removed. Parameters depend
only on (seed, split, index), never on the worker count or the order of completion, so the
data are the same however the run was split or resumed. Part and merged files record the
settings they were made with; a re-run with other settings is refused rather than mixing
trajectories of two configurations.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from simsurrogate.data.errors import DataError
from simsurrogate.data.mesh import MeshReader, MeshWriter
from simsurrogate.sims.cylinder_flow import H_MAX, H_OBSTACLE, ChannelGeometry, simulate

SPLITS = ("train", "valid", "test")
_SPLIT_IDS = {name: k for k, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class CylinderFlowConfig:
    """Ranges the trajectories are drawn from, and the solver settings (SI units).

    Defaults follow MeshGraphNets' CylinderFlow: a 1.6 m x 0.41 m channel, obstacles of
    varied size and position, about 1,500–2,000 mesh nodes, 600 saved steps 0.01 s apart.
    With ν = 1e-3 m²/s, Re = u_mean D / ν spans 30–120, from steady wakes to shedding. The
    inflow is ramped up over ``ramp_time`` and the first ``warmup`` seconds are not stored.
    """

    length: float = 1.6
    height: float = 0.41
    radius: tuple[float, float] = (0.03, 0.06)
    center_x: tuple[float, float] = (0.2, 0.5)
    center_y: tuple[float, float] = (0.13, 0.28)
    u_mean: tuple[float, float] = (0.5, 1.0)
    nu: float = 1e-3
    n_steps: int = 600
    dt: float = 0.01
    warmup: float = 1.0
    ramp_time: float = 0.5
    h_max: float = H_MAX
    h_obstacle: float = H_OBSTACLE

    def __post_init__(self) -> None:
        for name in ("radius", "center_x", "center_y", "u_mean"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
                raise ValueError(f"{name} range must be 0 < low <= high, got {(lo, hi)}")
        if self.n_steps < 2:
            raise ValueError(f"n_steps must be at least 2, got {self.n_steps}")


def trajectory_parameters(
    config: CylinderFlowConfig, seed: int, split: str, index: int
) -> dict[str, float]:
    """Obstacle centre (x, y), radius and mean inflow speed of one trajectory.

    Drawn from a generator seeded by (seed, split, index), so they do not depend on how many
    trajectories are made or in which order. Obstacles are kept at least one radius clear
    of the walls.
    """
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    for _ in range(1000):
        r = rng.uniform(*config.radius)
        x, y = rng.uniform(*config.center_x), rng.uniform(*config.center_y)
        if 2 * r < y < config.height - 2 * r and 2 * r < x < config.length - 2 * r:
            u = rng.uniform(*config.u_mean)
            return {"center_x": x, "center_y": y, "radius": r, "u_mean": u}
    raise ValueError(f"no obstacle fits the channel with the ranges of {config}")


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as JSON would give them back (tuples as lists), to compare with attributes
    read from a file."""
    return json.loads(json.dumps(dict(values)))


def _differences(found: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, tuple]:
    """Keys of ``expected`` whose value in ``found`` differs: key -> (found, expected)."""
    return {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}


def _refuse_other_settings(path: Path, differences: Mapping[str, tuple]) -> None:
    if differences:
        raise DataError(
            f"{path} was made with other settings (found, asked): {dict(differences)}; re-run "
            "with the settings it was made with, or pass overwrite=True (--overwrite) to make "
            "it again",
            path=path,
        )


def solve_trajectory(config: CylinderFlowConfig, params: Mapping[str, float], path: Path) -> Path:
    """Solve one trajectory and write it as a one-trajectory mesh file at ``path``, with the
    configuration as file attributes and ``params`` as the trajectory's."""
    geom = ChannelGeometry(
        config.length, config.height, (params["center_x"], params["center_y"]), params["radius"]
    )
    start = time.perf_counter()
    data = simulate(
        geom,
        nu=config.nu,
        u_mean=params["u_mean"],
        dt=config.dt,
        n_frames=config.n_steps,
        warmup=config.warmup,
        ramp_time=config.ramp_time,
        h_max=config.h_max,
        h_obstacle=config.h_obstacle,
    )
    seconds = time.perf_counter() - start
    reynolds = params["u_mean"] * 2 * params["radius"] / config.nu
    attrs = {**params, "nu": config.nu, "reynolds": reynolds, "solver_seconds": seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    with MeshWriter(path, attrs=asdict(config), overwrite=True) as writer:
        writer.add_trajectory(
            mesh_pos=data["mesh_pos"],
            cells=data["cells"],
            node_type=data["node_type"],
            fields={"velocity": data["velocity"], "pressure": data["pressure"]},
            time=data["time"] - data["time"][0],
            attrs=attrs,
        )
    return path


def _part_ok(path: Path, config: CylinderFlowConfig, params: Mapping[str, float]) -> bool:
    """A finished part: readable, one trajectory. Parts are written atomically, so a killed
    run leaves either a whole file or none; a damaged file is solved again. A part made with
    another configuration or other parameters raises :class:`DataError`."""
    if not path.exists():
        return False
    try:
        with MeshReader(path) as reader:
            if len(reader) != 1:
                return False
            found, found_params = reader.attrs, reader.attrs_of(0)
    except (DataError, OSError):
        return False
    _refuse_other_settings(
        path,
        {**_differences(found, _plain(asdict(config))), **_differences(found_params, params)},
    )
    return True


def _merge(parts: list[Path], dest: Path, attrs: Mapping) -> None:
    """Copy one-trajectory part files, in order, into one mesh file at ``dest``."""
    with MeshWriter(dest, attrs=attrs, overwrite=True) as writer:
        for part in parts:
            reader = MeshReader(part)
            try:
                static = reader.static(0)
                fields = reader.window(0, 0, reader.n_steps(0))
                writer.add_trajectory(
                    mesh_pos=static["mesh_pos"],
                    cells=static["cells"],
                    node_type=static["node_type"],
                    fields=fields,
                    time=reader.time(0),
                    attrs=reader.attrs_of(0),
                )
            finally:
                reader.close()


def generate_cylinder_flow(
    out: str | Path,
    n_train: int = 100,
    n_valid: int = 10,
    n_test: int = 10,
    seed: int = 0,
    config: CylinderFlowConfig | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``train.h5``, ``valid.h5`` and ``test.h5`` under ``out``; return their paths.

    ``workers`` processes solve trajectories in parallel (None: one per CPU core). Re-running
    after an interruption solves only the trajectories whose part file is missing. A split
    whose merged file already exists is left as it is, unless ``overwrite`` (which also
    discards unmerged parts).
    """
    config = config or CylinderFlowConfig()
    out = Path(out)
    if overwrite:
        shutil.rmtree(out / "parts", ignore_errors=True)
        for split in SPLITS:
            (out / f"{split}.h5").unlink(missing_ok=True)
    counts = {"train": n_train, "valid": n_valid, "test": n_test}
    settings = _plain({"seed": seed, **asdict(config)})
    todo: list[tuple[str, int, Path]] = []
    paths = {}
    for split, count in counts.items():
        paths[split] = out / f"{split}.h5"
        if count < 1:
            continue
        if paths[split].exists():
            with MeshReader(paths[split]) as reader:
                held, found = len(reader), reader.attrs
            _refuse_other_settings(paths[split], _differences(found, settings))
            if held != count:  # kept as is otherwise: say so rather than hand back the old one
                raise DataError(
                    f"{paths[split]} already holds {held} trajectories but {count} were asked "
                    "for; pass overwrite=True (--overwrite) to make it again, or another out "
                    "directory",
                    path=paths[split],
                )
            continue
        for i in range(count):
            part = out / "parts" / split / f"{i:06d}.h5"
            if not _part_ok(part, config, trajectory_parameters(config, seed, split, i)):
                todo.append((split, i, part))
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(todo), desc="cylinder-flow trajectories", disable=not progress)
    if todo:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {
                pool.submit(
                    solve_trajectory, config, trajectory_parameters(config, seed, s, i), p
                ): (s, i)
                for s, i, p in todo
            }
            for future in as_completed(futures):
                exc = future.exception()
                if exc is not None:  # finished parts stay on disk; a re-run continues
                    pool.shutdown(wait=True, cancel_futures=True)
                    split, i = futures[future]
                    params = trajectory_parameters(config, seed, split, i)
                    raise RuntimeError(
                        f"cylinder-flow {split} trajectory {i} ({params}) failed: {exc}. "
                        f"Finished trajectories are kept under {out / 'parts'}; re-run the same "
                        "command to continue."
                    ) from exc
                bar.update()
    bar.close()
    attrs = {"generator": "simsurrogate.sims.cylinder_dataset", **settings}
    for split, count in counts.items():
        if count < 1 or paths[split].exists():
            continue
        parts = [out / "parts" / split / f"{i:06d}.h5" for i in range(count)]
        _merge(parts, paths[split], {**attrs, "split": split})
        shutil.rmtree(out / "parts" / split)
    if (out / "parts").exists() and not any((out / "parts").iterdir()):
        (out / "parts").rmdir()
    return {s: p for s, p in paths.items() if counts[s] > 0}
