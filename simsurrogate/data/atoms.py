"""Labelled atomic structures for training potentials: frames of particle files as graphs.

A training set is a particle file (:mod:`simsurrogate.data.particles`) whose frames carry
``positions``, ``numbers``, ``cell``/``pbc`` and labels ``energy`` (eV), ``forces`` (eV/Å) and
optionally ``stress`` (eV/Å³, with an optional per-frame ``has_stress`` flag for sets that mix
periodic and free structures). Frames are read into memory once (training sets are small next
to the models' cost) and checked: units must be ASE's, periodic cells must have volume, and no
two atoms may sit closer than ``min_distance``. Batches are
:class:`~simsurrogate.graph.Graph` objects from :func:`~simsurrogate.graph.atoms.atoms_graph`
with the labels added: ``nodes["forces"]`` (N, 3), ``globals["energy"]`` (G,) float64,
``globals["stress"]`` (G, 3, 3) and ``globals["has_stress"]`` (G,) bool.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from simsurrogate.data.errors import DataError
from simsurrogate.data.particles import ASE_UNITS, FrameReader
from simsurrogate.graph import Graph
from simsurrogate.graph.atoms import atoms_graph

__all__ = ["AtomsDataModule", "AtomsDataset"]

LABELS = ("energy", "forces", "stress")


class AtomsDataset(Dataset):
    """All frames of one particle file in memory; items are frame indices and
    :meth:`collate` turns a list of them into one batched graph with labels.

    Args:
        path: particle file.
        cutoff: neighbour-list radius (Å); may be set later (the task sets it from the model).
        min_distance: closest allowed pair distance (Å); closer atoms are an error naming the
            frame, since they mean a broken structure rather than physics.
        dtype: float dtype of positions, cells and labels (energies stay float64).
    """

    def __init__(
        self,
        path: str | Path,
        cutoff: float | None = None,
        min_distance: float = 0.5,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.path = Path(path)
        self.cutoff = cutoff
        self.dtype = dtype
        reader = FrameReader(self.path)
        try:
            self._check_units(reader)
            for name in ("numbers",):
                if name not in reader.fields:
                    raise DataError("atomic structures need atomic numbers", path=path, field=name)
            data = reader.frames(np.arange(len(reader)))
            self.attrs = reader.attrs
        finally:
            reader.close()
        self.labels = tuple(name for name in LABELS if name in data)
        self.n_atoms = data["n_atoms"].astype(np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(self.n_atoms)))
        n = len(self.n_atoms)
        self.positions = data["positions"].astype(np.float64)
        self.numbers = data["numbers"].astype(np.int64)
        self.cell = data.get("cell", np.zeros((n, 3, 3))).astype(np.float64)
        self.pbc = data.get("pbc", np.zeros((n, 3), bool)).astype(bool)
        self.energy = data["energy"].astype(np.float64) if "energy" in data else None
        self.forces = data["forces"].astype(np.float64) if "forces" in data else None
        self.stress = data["stress"].astype(np.float64) if "stress" in data else None
        if self.stress is not None:
            flag = data.get("has_stress", np.ones(n, bool))
            self.has_stress = np.asarray(flag).astype(bool)
        else:
            self.has_stress = np.zeros(n, bool)
        self._check_cells()
        self._check_distances(min_distance)

    def _check_units(self, reader: FrameReader) -> None:
        for name in ("positions", "cell", *LABELS):
            unit = reader.units.get(name)
            if name in reader.fields and unit is not None and unit != ASE_UNITS[name]:
                raise DataError(
                    "units differ from ASE's, which potentials are trained in; convert the "
                    "file (e.g. re-import it with ase) before mixing it with other data",
                    path=self.path,
                    field=name,
                    expected=ASE_UNITS[name],
                    found=unit,
                )

    def _check_cells(self) -> None:
        volume = np.abs(np.linalg.det(self.cell))
        bad = np.nonzero(self.pbc.any(axis=1) & (volume < 1e-6))[0]
        if len(bad):
            raise DataError(
                f"frame {int(bad[0])} is periodic but its cell has zero volume",
                path=self.path,
                field="cell",
            )
        if self.stress is not None:
            bad = np.nonzero(self.has_stress & ~(self.pbc.all(axis=1) & (volume > 1e-6)))[0]
            if len(bad):
                raise DataError(
                    f"frame {int(bad[0])} has a stress label but is not a periodic cell with "
                    "volume (set has_stress = 0 for it)",
                    path=self.path,
                    field="stress",
                )

    def _check_distances(self, min_distance: float) -> None:
        """Raise if two atoms of any frame are closer than ``min_distance`` Å."""
        step = 256
        for start in range(0, len(self), step):
            idx = list(range(start, min(start + step, len(self))))
            g = self._graph(idx, cutoff=min_distance)
            if g.num_edges == 0:
                continue
            j, i = (int(k[0]) for k in g.edge_index)
            k = int(g.node_batch[i])
            first = int(g.node_offsets[k])
            raise DataError(
                f"frame {idx[k]}: atoms {i - first} and {j - first} are closer than "
                f"{min_distance} Å (overlapping atoms)",
                path=self.path,
                field="positions",
            )

    def __len__(self) -> int:
        return len(self.n_atoms)

    def __getitem__(self, idx: int) -> int:
        return idx

    def _rows(self, idx: list[int]) -> np.ndarray:
        return np.concatenate([np.arange(self.offsets[k], self.offsets[k + 1]) for k in idx])

    def _graph(self, idx: list[int], cutoff: float) -> Graph:
        rows = self._rows(idx)
        return atoms_graph(
            torch.as_tensor(self.positions[rows], dtype=self.dtype),
            torch.as_tensor(self.numbers[rows]),
            torch.as_tensor(self.cell[idx], dtype=self.dtype),
            torch.as_tensor(self.pbc[idx]),
            torch.as_tensor(self.n_atoms[idx]),
            cutoff,
        )

    def collate(self, idx: list[int]) -> Graph:
        """Batch frames ``idx`` into one graph with their labels."""
        if self.cutoff is None:
            raise RuntimeError("AtomsDataset.cutoff is not set (the task sets it from the model)")
        g = self._graph(list(idx), self.cutoff)
        rows = self._rows(list(idx))
        if self.energy is not None:
            g.globals["energy"] = torch.as_tensor(self.energy[idx], dtype=torch.float64)
        if self.forces is not None:
            g.nodes["forces"] = torch.as_tensor(self.forces[rows], dtype=self.dtype)
        if self.stress is not None:
            g.globals["stress"] = torch.as_tensor(self.stress[idx], dtype=self.dtype)
            g.globals["has_stress"] = torch.as_tensor(self.has_stress[idx])
        return g

    def composition(self) -> tuple[np.ndarray, np.ndarray]:
        """Atomic numbers of all frames back to back and atoms per frame (for reference
        energies)."""
        return self.numbers, self.n_atoms


class AtomsDataModule(L.LightningDataModule):
    """Train / valid / test particle files of labelled structures.

    Args:
        train, valid, test: particle files (``test`` optional).
        batch_size: structures per batch.
        cutoff: neighbour-list radius in Å; ``None`` takes the model's (set by the task).
        min_distance: closest allowed pair distance in Å (closer is an error).
        max_train: use only the first ``max_train`` training frames (``None``: all).
        num_workers: DataLoader worker processes building neighbour lists.
    """

    def __init__(
        self,
        train: str,
        valid: str,
        test: str | None = None,
        batch_size: int = 8,
        cutoff: float | None = None,
        min_distance: float = 0.5,
        max_train: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.paths = {"train": train, "valid": valid, "test": test}
        self.batch_size = batch_size
        self.cutoff = cutoff
        self.min_distance = min_distance
        self.max_train = max_train
        self.num_workers = num_workers
        self._sets: dict[str, AtomsDataset] = {}

    def dataset(self, split: str) -> AtomsDataset:
        """The dataset of one split, read on first use."""
        if split not in self._sets:
            path = self.paths[split]
            if path is None:
                raise DataError(f"no {split} file given to the data module", field=split)
            if not Path(path).exists():
                raise DataError(f"{split} file does not exist", path=path)
            self._sets[split] = AtomsDataset(path, self.cutoff, self.min_distance)
        return self._sets[split]

    def set_cutoff(self, cutoff: float) -> None:
        """Neighbour-list radius for every split (Å)."""
        self.cutoff = cutoff
        for ds in self._sets.values():
            ds.cutoff = cutoff

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
        if stage in (None, "fit", "validate"):
            self.dataset("valid")
        if stage in (None, "test") and self.paths["test"] is not None:
            self.dataset("test")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        if split == "train" and self.max_train is not None:
            ds_index = list(range(min(self.max_train, len(ds))))
            data: Dataset = torch.utils.data.Subset(ds, ds_index)
        else:
            data = ds
        return DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=ds.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def train_frames(self) -> np.ndarray:
        """Indices of the training frames actually used (respects ``max_train``)."""
        n = len(self.dataset("train"))
        return np.arange(n if self.max_train is None else min(n, self.max_train))
