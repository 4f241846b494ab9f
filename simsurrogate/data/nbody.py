"""DataModule for the charged N-body benchmark: (frame t, frame t + horizon) pairs as graphs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from simsurrogate.data.errors import DataError
from simsurrogate.data.particles import FrameReader
from simsurrogate.graph import Graph, fully_connected


def load_pairs(
    path: str | Path, frame_in: int, frame_out: int, max_samples: int | None = None
) -> dict[str, torch.Tensor]:
    """Read frame ``frame_in`` and ``frame_out`` of each trajectory of an N-body file.

    Returns float32 tensors ``pos``, ``vel``, ``target_pos``, ``target_vel`` (S, N, 3) and
    ``charge`` (S, N). Only those two frames per trajectory are read from disk.
    """
    reader = FrameReader(path)
    try:
        traj = np.asarray(
            reader.frames(np.arange(len(reader)), fields=["trajectory"])["trajectory"]
        )
        ids, starts, lengths = np.unique(traj, return_index=True, return_counts=True)
        if max_samples is not None:
            ids, starts, lengths = ids[:max_samples], starts[:max_samples], lengths[:max_samples]
        need = max(frame_in, frame_out)
        if (lengths <= need).any():
            bad = int(ids[np.argmax(lengths <= need)])
            raise DataError(
                f"trajectory {bad} is too short for frames {frame_in} -> {frame_out}",
                path=path,
                field="trajectory",
                expected=f"> {need} frames",
                found=int(lengths.min()),
            )
        n = reader.n_atoms[starts]
        if (n != n[0]).any():
            raise DataError("systems of different sizes", path=path, field="n_atoms")
        out: dict[str, torch.Tensor] = {}
        fields = ["positions", "velocities", "charges"]
        for name, frame in (("in", frame_in), ("out", frame_out)):
            data = reader.frames(starts + frame, fields=fields)
            shape = (len(starts), int(n[0]))
            pos = torch.as_tensor(data["positions"], dtype=torch.float32).reshape(*shape, 3)
            vel = torch.as_tensor(data["velocities"], dtype=torch.float32).reshape(*shape, 3)
            if name == "in":
                out["pos"], out["vel"] = pos, vel
                out["charge"] = torch.as_tensor(data["charges"], dtype=torch.float32).reshape(shape)
            else:
                out["target_pos"], out["target_vel"] = pos, vel
        return out
    finally:
        reader.close()


def systems_to_graph(batch: dict[str, torch.Tensor]) -> Graph:
    """Turn equally sized systems, tensors (B, N, ...), into one fully connected batched graph."""
    b, n = batch["pos"].shape[:2]
    nodes = {k: v.reshape(b * n, *v.shape[2:]) for k, v in batch.items()}
    counts = torch.full((b,), n, dtype=torch.long)
    edge_index = fully_connected(counts)
    n_edges = torch.full((b,), n * (n - 1), dtype=torch.long)
    return Graph(nodes=nodes, edge_index=edge_index, n_nodes=counts, n_edges=n_edges)


class _Systems(Dataset):
    """In-memory systems; items are indices and :meth:`collate` gathers a batch in one go.

    Gathering in the collate function keeps batches vectorised while the sampler stays an
    ordinary (or, under DDP, distributed) sampler of indices.
    """

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["pos"])

    def __getitem__(self, idx: int) -> int:
        return idx

    def collate(self, idx: list[int]) -> Graph:
        index = torch.as_tensor(idx)
        return systems_to_graph({k: v[index] for k, v in self.tensors.items()})


class NBodyDataModule(L.LightningDataModule):
    """Charged N-body splits ``train.h5`` / ``valid.h5`` / ``test.h5`` under ``root``.

    Args:
        root: directory written by ``simsurrogate data generate nbody``.
        frame_in, frame_out: input and target frame of every trajectory (paper: 30 -> 40).
        batch_size: systems per batch (paper: 100).
        max_train_samples: first trajectories of the training split to use (paper: 3000).
        max_eval_samples: cap on validation/test trajectories (None: all).
    """

    def __init__(
        self,
        root: str = "data/nbody",
        frame_in: int = 30,
        frame_out: int = 40,
        batch_size: int = 100,
        max_train_samples: int | None = 3000,
        max_eval_samples: int | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.frame_in, self.frame_out = frame_in, frame_out
        self.batch_size = batch_size
        self.max_train_samples = max_train_samples
        self.max_eval_samples = max_eval_samples
        self._splits: dict[str, _Systems] = {}

    def _split(self, name: str, max_samples: int | None) -> _Systems:
        if name not in self._splits:
            path = self.root / f"{name}.h5"
            if not path.exists():
                raise DataError(
                    "split file missing; create it with "
                    f"`simsurrogate data generate nbody --out {self.root}`",
                    path=path,
                )
            tensors = load_pairs(path, self.frame_in, self.frame_out, max_samples)
            self._splits[name] = _Systems(tensors)
        return self._splits[name]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._split("train", self.max_train_samples)
        if stage in (None, "fit", "validate"):
            self._split("valid", self.max_eval_samples)
        if stage in (None, "test"):
            self._split("test", self.max_eval_samples)

    def _loader(self, dataset: _Systems, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            collate_fn=dataset.collate,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._split("train", self.max_train_samples), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._split("valid", self.max_eval_samples), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._split("test", self.max_eval_samples), shuffle=False)
