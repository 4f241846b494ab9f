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

Fine-tuning can replay pretraining data: :class:`AtomsDataModule` mixes frames of a ``replay``
file into every training epoch (:class:`ReplaySampler`), drawn afresh each epoch from the whole
file or from a subset spread over structure space by farthest-point sampling
(:func:`farthest_point_sampling` on :func:`structure_descriptors`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from simsurrogate.data.errors import DataError
from simsurrogate.data.particles import ASE_UNITS, FrameReader
from simsurrogate.graph import Graph, edge_vectors
from simsurrogate.graph.atoms import atoms_graph

__all__ = [
    "AtomsDataModule",
    "AtomsDataset",
    "ReplaySampler",
    "farthest_point_sampling",
    "structure_descriptors",
]

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


def _joined(first: AtomsDataset, second: AtomsDataset) -> AtomsDataset:
    """One dataset holding the frames of ``first`` then those of ``second``, with the labels
    of ``first``: ``second`` must carry its energies and forces; frames of ``second`` without a
    stress get ``has_stress = False``."""
    for label in ("energy", "forces"):
        if getattr(first, label) is not None and getattr(second, label) is None:
            raise DataError(
                f"the replay file has no {label!r}, which the training file has",
                path=second.path,
                field=label,
            )
    out = copy.copy(first)
    for name in ("positions", "numbers", "n_atoms", "cell", "pbc", "energy", "forces"):
        if getattr(first, name) is not None:
            setattr(out, name, np.concatenate([getattr(first, name), getattr(second, name)]))
    out.offsets = np.concatenate(([0], np.cumsum(out.n_atoms)))
    if first.stress is not None:
        n = len(second)
        stress = second.stress if second.stress is not None else np.zeros((n, 3, 3))
        out.stress = np.concatenate([first.stress, stress])
    out.has_stress = np.concatenate([first.has_stress, second.has_stress])
    return out


def structure_descriptors(ds: AtomsDataset, cutoff: float = 5.0, bins: int = 16) -> np.ndarray:
    """A cheap per-structure fingerprint (F, n_elements + bins): the element fractions and the
    histogram of pair distances within ``cutoff`` Å (pairs per atom, ``bins`` equal bins),
    each column standardised over the file. Invariant to atom order, rotation and
    translation; meant for picking diverse structures, not for learning."""
    elements = np.unique(ds.numbers)
    frame_of_atom = np.repeat(np.arange(len(ds)), ds.n_atoms)
    composition = np.zeros((len(ds), len(elements)))
    np.add.at(composition, (frame_of_atom, np.searchsorted(elements, ds.numbers)), 1.0)
    composition /= ds.n_atoms[:, None]
    histogram = np.zeros((len(ds), bins))
    step = 256
    for start in range(0, len(ds), step):
        idx = list(range(start, min(start + step, len(ds))))
        g = ds._graph(idx, cutoff)
        j, i = g.edge_index
        cell = g.globals["cell"][g.node_batch[i]]
        r = edge_vectors(g.nodes["positions"], i, j, g.edges["shifts"], cell).norm(dim=-1)
        b = np.minimum((r.numpy() / cutoff * bins).astype(np.int64), bins - 1)
        frame = g.node_batch[i].numpy() + start
        np.add.at(histogram, (frame, b), 1.0)
    histogram /= ds.n_atoms[:, None]
    x = np.concatenate([composition, histogram], axis=1)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def farthest_point_sampling(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` rows of ``x`` (F, D) spread out: start from the row farthest from the
    mean, then repeatedly add the row farthest (Euclidean) from all chosen ones."""
    k = min(k, len(x))
    chosen = [int(np.argmax(np.linalg.norm(x - x.mean(axis=0), axis=1)))]
    distance = np.linalg.norm(x - x[chosen[0]], axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(x - x[nxt], axis=1))
    return np.array(chosen, dtype=np.int64)


class ReplaySampler(Sampler[int]):
    """Frame indices of one training epoch: every training frame once plus ``n_replay``
    replay frames drawn afresh each epoch (without replacement when the pool is large enough)
    from ``pool``, all shuffled. Indices refer to the joined set (training frames, then the
    replay file's)."""

    def __init__(self, train: np.ndarray, pool: np.ndarray, n_replay: int) -> None:
        self.train = torch.as_tensor(train, dtype=torch.long)
        self.pool = torch.as_tensor(pool, dtype=torch.long)
        self.n_replay = n_replay

    def __len__(self) -> int:
        return len(self.train) + self.n_replay

    def __iter__(self) -> Iterator[int]:
        n, size = self.n_replay, len(self.pool)
        if n <= size:
            pick = self.pool[torch.randperm(size)[:n]]
        else:
            pick = self.pool[torch.randint(size, (n,))]
        epoch = torch.cat([self.train, pick])
        return iter(epoch[torch.randperm(len(epoch))].tolist())


class AtomsDataModule(L.LightningDataModule):
    """Train / valid / test particle files of labelled structures.

    Args:
        train, valid, test: particle files (``test`` optional).
        batch_size: structures per batch.
        cutoff: neighbour-list radius in Å; ``None`` takes the model's (set by the task).
        min_distance: closest allowed pair distance in Å (closer is an error).
        max_train: use only the first ``max_train`` training frames (``None``: all).
        num_workers: DataLoader worker processes building neighbour lists.
        replay: particle file of pretraining structures to mix into every training epoch
            (same units, energy and force labels as ``train``).
        replay_fraction: fraction of each epoch's frames that come from ``replay``, in [0, 1)
            (0.2 with 100 training frames: 25 replay frames per epoch, drawn afresh).
        replay_selection: "random" (draw from the whole replay file, or its first
            ``replay_pool`` frames) or "fps" (draw from ``replay_pool`` frames picked once by
            farthest-point sampling on :func:`structure_descriptors`).
        replay_pool: number of replay frames to draw from (``None``: all; "fps" needs it).
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
        replay: str | None = None,
        replay_fraction: float = 0.0,
        replay_selection: str = "random",
        replay_pool: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= replay_fraction < 1.0:
            raise ValueError(f"replay_fraction must be in [0, 1), got {replay_fraction}")
        if (replay is None) != (replay_fraction == 0.0):
            raise ValueError(
                "replay (a file) and replay_fraction > 0 go together, got replay="
                f"{replay!r}, replay_fraction={replay_fraction}"
            )
        if replay_selection not in ("random", "fps"):
            raise ValueError(f"replay_selection must be random or fps, got {replay_selection!r}")
        if replay_selection == "fps" and replay_pool is None:
            raise ValueError("replay_selection: fps needs replay_pool (how many frames to pick)")
        if replay_pool is not None and replay_pool < 1:
            raise ValueError(f"replay_pool must be >= 1, got {replay_pool}")
        self.paths = {"train": train, "valid": valid, "test": test, "replay": replay}
        self.replay_fraction = replay_fraction
        self.replay_selection = replay_selection
        self.replay_pool = replay_pool
        self._pool: np.ndarray | None = None
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
            if self.paths["replay"] is not None:
                self.dataset("replay")
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

    def replay_frames(self) -> np.ndarray:
        """Indices of the replay file's frames that epochs draw from (picked once)."""
        if self._pool is None:
            ds = self.dataset("replay")
            k = len(ds) if self.replay_pool is None else min(self.replay_pool, len(ds))
            if self.replay_selection == "fps":
                x = structure_descriptors(ds, cutoff=self.cutoff or 5.0)
                self._pool = np.sort(farthest_point_sampling(x, k))
            else:
                self._pool = np.arange(k)
        return self._pool

    def train_dataloader(self) -> DataLoader:
        if self.paths["replay"] is None:
            return self._loader("train", shuffle=True)
        train, replay = self.dataset("train"), self.dataset("replay")
        frames = self.train_frames()
        f = self.replay_fraction
        n_replay = max(1, round(f * len(frames) / (1.0 - f)))
        data = _joined(train, replay)
        sampler = ReplaySampler(frames, len(train) + self.replay_frames(), n_replay)
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=data.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def train_frames(self) -> np.ndarray:
        """Indices of the training frames actually used (respects ``max_train``)."""
        n = len(self.dataset("train"))
        return np.arange(n if self.max_train is None else min(n, self.max_train))
