"""One-step training pairs (state at step t, fields at step t + 1) from mesh-trajectory files.

Samples are drawn uniformly over every (trajectory, step) transition, as in MeshGraphNets.
Each sample reads only its time steps from disk (:meth:`MeshReader.window`); the static
mesh and its edges are read once per trajectory and cached per worker.

For pushforward training (``unroll_steps`` K > 0, see
:class:`~simsurrogate.tasks.MeshDynamicsTask`) a sample also carries the true fields of the
K + 1 steps after t, which the task needs to hold the boundary nodes while it unrolls the
model and to score the step after the unroll.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from simsurrogate.data.errors import DataError
from simsurrogate.data.mesh import MeshReader
from simsurrogate.data.node_types import check_node_types
from simsurrogate.graph import Graph, cells_to_edges

__all__ = ["MeshDataModule", "MeshSteps", "mesh_graph"]


def mesh_graph(
    mesh_pos: Tensor | np.ndarray,
    node_type: Tensor | np.ndarray,
    fields: dict[str, Tensor | np.ndarray],
    *,
    cells: Tensor | np.ndarray | None = None,
    edge_index: Tensor | np.ndarray | None = None,
) -> Graph:
    """A single-graph :class:`Graph` of one mesh state.

    ``mesh_pos`` (N, dim), ``node_type`` (N,), ``fields`` name -> (N, ...) node fields;
    mesh edges from ``edge_index`` (2, E) when given, else both directions of every cell side.
    Floating tensors become float32.
    """
    if edge_index is None:
        if cells is None:
            raise ValueError("mesh_graph needs cells or edge_index")
        edge_index = cells_to_edges(torch.as_tensor(cells))
    nodes = {
        "mesh_pos": torch.as_tensor(mesh_pos, dtype=torch.float32),
        "node_type": torch.as_tensor(node_type, dtype=torch.long),
    }
    for name, value in fields.items():
        nodes[name] = torch.as_tensor(value, dtype=torch.float32)
    return Graph(nodes=nodes, edge_index=torch.as_tensor(edge_index, dtype=torch.long))


class MeshSteps(Dataset):
    """(trajectory, step) transitions of one mesh file as graphs.

    A sample is a :class:`Graph` whose nodes hold ``mesh_pos``, ``node_type``, the fields at
    step t under their own names and the fields at step t + 1 as ``next_<name>``. With
    ``unroll_steps`` K > 0 it also holds ``future_<name>`` (N, K + 1, C): the fields at steps
    t + 1 .. t + K + 1 (``future_<name>[:, 0]`` is ``next_<name>``), and only the steps t
    whose whole window t .. t + K + 1 lies in the trajectory are sampled.

    Args:
        path: mesh-schema file.
        fields: time-dependent node fields to read (checked to exist in every trajectory).
        max_trajectories: use only the first ones.
        steps_per_trajectory: use this many evenly spaced transitions per trajectory
            (None: all); keeps validation cheap.
        unroll_steps: K, the most model steps a pushforward task unrolls before the scored
            step (0: one-step pairs only).
    """

    def __init__(
        self,
        path: str | Path,
        fields: Sequence[str],
        max_trajectories: int | None = None,
        steps_per_trajectory: int | None = None,
        unroll_steps: int = 0,
    ) -> None:
        if unroll_steps < 0:
            raise ValueError(f"unroll_steps must be >= 0, got {unroll_steps}")
        self.reader = MeshReader(path)
        self.fields = list(fields)
        self.unroll_steps = int(unroll_steps)
        n_traj = len(self.reader)
        if max_trajectories is not None:
            n_traj = min(n_traj, max_trajectories)
        if n_traj == 0:
            raise DataError("no trajectories", path=self.reader.path)
        index = []
        for i in range(n_traj):
            missing = set(self.fields) - set(self.reader.fields(i))
            if missing:
                raise DataError(
                    f"the recipe names fields {sorted(missing)} that the file does not have "
                    f"(it has {self.reader.fields(i)})",
                    path=self.reader.path,
                    group=self.reader.trajectories[i],
                )
            n = self.reader.n_steps(i) - 1 - self.unroll_steps  # start steps t that fit
            if n < 1:
                raise DataError(
                    f"trajectory needs at least {self.unroll_steps + 2} time steps "
                    f"(unroll_steps = {self.unroll_steps}), it has {self.reader.n_steps(i)}",
                    path=self.reader.path,
                    group=self.reader.trajectories[i],
                )
            steps = np.arange(n)
            if steps_per_trajectory is not None and steps_per_trajectory < n:
                steps = np.linspace(0, n - 1, steps_per_trajectory).round().astype(np.int64)
            index.append(np.stack([np.full_like(steps, i), steps], axis=1))
        self.index = np.concatenate(index)
        self._static = lru_cache(maxsize=64)(self._read_static)

    def _read_static(self, traj: int) -> tuple[Tensor, Tensor, Tensor]:
        """mesh_pos (N, dim) float32, node_type (N,) int64, edge_index (2, E) of a trajectory."""
        static = self.reader.static(traj)
        try:
            check_node_types(static["node_type"])
        except ValueError as exc:
            raise DataError(
                str(exc),
                path=self.reader.path,
                group=self.reader.trajectories[traj],
                field="node_type",
            ) from None
        edges = static.get("edge_index")
        edge_index = cells_to_edges(static["cells"]) if edges is None else torch.as_tensor(edges)
        return (
            torch.as_tensor(static["mesh_pos"], dtype=torch.float32),
            torch.as_tensor(static["node_type"], dtype=torch.long),
            edge_index.long(),
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Graph:
        traj, step = (int(v) for v in self.index[i])
        mesh_pos, node_type, edge_index = self._static(traj)
        k = self.unroll_steps
        window = self.reader.window(traj, step, k + 2, self.fields)
        n = len(mesh_pos)
        nodes = {"mesh_pos": mesh_pos, "node_type": node_type}
        for name, value in window.items():
            value = torch.as_tensor(value, dtype=torch.float32).reshape(k + 2, n, -1)
            nodes[name], nodes[f"next_{name}"] = value[0], value[1]
            if k > 0:
                nodes[f"future_{name}"] = value[1:].transpose(0, 1).contiguous()
        return Graph(nodes=nodes, edge_index=edge_index)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_static")  # the cache is rebuilt in each worker
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._static = lru_cache(maxsize=64)(self._read_static)


class MeshDataModule(L.LightningDataModule):
    """Mesh-trajectory files for one-step training of a mesh simulator.

    Args:
        train, val, test: mesh-schema files (``simsurrogate data generate cylinder-flow``
            writes ``train.h5``, ``valid.h5``, ``test.h5``).
        fields: time-dependent node fields to read; the first is the integrated one
            (``velocity``), the others are predicted directly (``pressure``).
        batch_size: graphs per batch (MeshGraphNets: 1; several are concatenated).
        num_workers: DataLoader worker processes.
        max_train_trajectories: use only the first training trajectories.
        eval_steps_per_trajectory: evenly spaced transitions per validation / test
            trajectory (None: all).
        unroll_steps: K > 0 gives training samples the window of true fields a pushforward
            task unrolling up to K steps needs (:class:`MeshSteps`); it must be at least the
            task's ``unroll_steps``. Validation and test stay one-step.
    """

    def __init__(
        self,
        train: str,
        val: str | None = None,
        test: str | None = None,
        fields: list[str] | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        max_train_trajectories: int | None = None,
        eval_steps_per_trajectory: int | None = 50,
        unroll_steps: int = 0,
    ) -> None:
        super().__init__()
        if unroll_steps < 0:
            raise ValueError(f"unroll_steps must be >= 0, got {unroll_steps}")
        self.unroll_steps = int(unroll_steps)
        self.paths = {"train": train, "val": val, "test": test}
        self.fields = list(fields or ["velocity", "pressure"])
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_train_trajectories = max_train_trajectories
        self.eval_steps = eval_steps_per_trajectory
        self._sets: dict[str, MeshSteps] = {}

    def dataset(self, split: str) -> MeshSteps:
        """The :class:`MeshSteps` of ``split`` (train, val or test), opened on first use."""
        if split not in self._sets:
            path = self.paths[split]
            if path is None:
                raise DataError(f"no {split} file given to the data module")
            if split == "train":
                self._sets[split] = MeshSteps(
                    path,
                    self.fields,
                    self.max_train_trajectories,
                    unroll_steps=self.unroll_steps,
                )
            else:
                self._sets[split] = MeshSteps(path, self.fields, None, self.eval_steps)
        return self._sets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
        if stage in (None, "fit", "validate") and self.paths["val"] is not None:
            self.dataset("val")
        if stage in (None, "test"):
            self.dataset("test")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=Graph.batch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.paths["val"] is None else self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
