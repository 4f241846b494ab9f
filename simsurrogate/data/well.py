"""DataModule for grid fields in The Well's layout: (input steps, target steps) windows.

Each item is a window of one trajectory: ``history`` consecutive input steps of the
``input_fields`` and, ``target_offset`` steps after the last input, ``horizon`` steps of the
``target_fields``. Fields are moved to channels first, components flattened, so a model sees
x (history * C_in, *spatial) and y (horizon * C_out, *spatial), channels step-major (all
fields' components of the first step, then of the next). Time-constant problems such as
Darcy flow use ``history=1, target_offset=0, horizon=1`` (coefficient -> solution);
Burgers uses ``target_offset=1`` (u(0) -> u(1)); Navier–Stokes ``history=10``, with
``horizon=40`` and ``window_starts=[1]`` for the FNO paper's rollout window (snapshots
t = 1..10 given, t = 11..50 predicted).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from simsurrogate.data.errors import DataError
from simsurrogate.data.grid import WellReader


def to_channels(fields: dict[str, np.ndarray], names: list[str], n_spatial: int) -> torch.Tensor:
    """Fields (steps, *spatial, *components) -> float32 (steps * channels, *spatial).

    Channels are step-major: the components of every field in ``names`` at the first step,
    then at the next.
    """
    parts = []
    for name in names:
        a = fields[name]
        parts.append(np.moveaxis(a.reshape(*a.shape[: 1 + n_spatial], -1), -1, 1))
    stacked = np.concatenate(parts, axis=1)  # (steps, channels, *spatial)
    return torch.from_numpy(stacked.reshape(-1, *stacked.shape[2:]).astype(np.float32))


class WellWindows(Dataset):
    """(x, y) tensors from windows of trajectories of one or more Well files.

    Args:
        readers: opened files (lazy h5py handles, safe in DataLoader workers).
        trajectories: (file index, trajectory) pairs to draw windows from.
        window_starts: first steps of the windows to use (default: every step that fits).
    """

    def __init__(
        self,
        readers: Sequence[WellReader],
        trajectories: Sequence[tuple[int, int]],
        input_fields: Sequence[str],
        target_fields: Sequence[str],
        history: int = 1,
        target_offset: int = 1,
        horizon: int = 1,
        window_starts: Sequence[int] | None = None,
    ) -> None:
        if history < 1 or horizon < 1 or target_offset < 0:
            raise ValueError(
                f"need history >= 1, horizon >= 1, target_offset >= 0; got {history}, "
                f"{horizon}, {target_offset}"
            )
        self.readers = list(readers)
        self.input_fields, self.target_fields = list(input_fields), list(target_fields)
        self.history, self.target_offset, self.horizon = history, target_offset, horizon
        self.length = history - 1 + target_offset + horizon
        self.items: list[tuple[int, int, int]] = []
        for f, traj in trajectories:
            n_steps = self.readers[f].n_steps
            if n_steps < self.length:
                raise DataError(
                    "trajectory too short for the window",
                    path=self.readers[f].path,
                    expected=f">= {self.length} steps",
                    found=n_steps,
                )
            fits = range(n_steps - self.length + 1)
            starts = fits if window_starts is None else list(window_starts)
            if any(s not in fits for s in starts):
                raise DataError(
                    "a window start leaves no room for the window",
                    path=self.readers[f].path,
                    expected=f"starts in 0..{len(fits) - 1} for windows of {self.length} steps",
                    found=starts,
                )
            self.items += [(f, traj, s) for s in starts]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        f, traj, start = self.items[i]
        reader = self.readers[f]
        window = reader.window(traj, start, self.length, self.input_fields + self.target_fields)
        d = len(reader.spatial_shape)
        x = {k: window[k][: self.history] for k in self.input_fields}
        first = self.history - 1 + self.target_offset
        y = {k: window[k][first : first + self.horizon] for k in self.target_fields}
        return to_channels(x, self.input_fields, d), to_channels(y, self.target_fields, d)


class WellDataModule(L.LightningDataModule):
    """Train / validation / test windows from Well-format files.

    Args:
        train: training file(s); ``val_fraction`` of their trajectories (a fixed random
            choice) is held out for validation, so no window is in both.
        test: held-out test file(s).
        input_fields, target_fields: field names as stored in the files.
        history, target_offset, horizon: window shape (see the module docstring).
        window_starts: first steps of the windows (default: every step where one fits).
        max_train_trajectories: use only the first trajectories of the training files.
    """

    def __init__(
        self,
        train: str | list[str],
        input_fields: list[str],
        target_fields: list[str],
        test: str | list[str] | None = None,
        history: int = 1,
        target_offset: int = 1,
        horizon: int = 1,
        window_starts: list[int] | None = None,
        val_fraction: float = 0.1,
        max_train_trajectories: int | None = None,
        batch_size: int = 20,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_paths = [train] if isinstance(train, str) else list(train)
        self.test_paths = [] if test is None else [test] if isinstance(test, str) else list(test)
        self.input_fields, self.target_fields = list(input_fields), list(target_fields)
        self.window = {"history": history, "target_offset": target_offset, "horizon": horizon}
        self.window_starts = window_starts
        self.val_fraction = val_fraction
        self.max_train_trajectories = max_train_trajectories
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self._sets: dict[str, WellWindows] = {}

    def _open(self, paths: list[str]) -> list[WellReader]:
        readers = []
        for p in paths:
            if not Path(p).exists():
                raise DataError("no such file", path=p)
            reader = WellReader(p)
            for name in self.input_fields + self.target_fields:
                if name not in reader.fields:
                    raise DataError(
                        "the recipe names a field the file does not have",
                        path=p,
                        field=name,
                        expected=f"one of {sorted(reader.fields)}",
                        found=name,
                    )
            readers.append(reader)
        return readers

    def _windows(self, readers: list[WellReader], trajs: list[tuple[int, int]]) -> WellWindows:
        return WellWindows(
            readers,
            trajs,
            self.input_fields,
            self.target_fields,
            window_starts=self.window_starts,
            **self.window,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and "train" not in self._sets:
            readers = self._open(self.train_paths)
            trajs = [(f, t) for f, r in enumerate(readers) for t in range(r.n_trajectories)]
            trajs = trajs[: self.max_train_trajectories]
            order = np.random.default_rng(self.seed).permutation(len(trajs))
            n_val = int(round(self.val_fraction * len(trajs)))
            if n_val < 1 or n_val >= len(trajs):
                raise DataError(
                    f"val_fraction {self.val_fraction} leaves no training or no validation "
                    f"trajectory out of {len(trajs)}",
                    path=self.train_paths[0],
                )
            self._sets["val"] = self._windows(readers, [trajs[i] for i in sorted(order[:n_val])])
            self._sets["train"] = self._windows(readers, [trajs[i] for i in sorted(order[n_val:])])
        if stage in (None, "test") and "test" not in self._sets:
            if not self.test_paths:
                raise DataError("no test file given (data.init_args.test)")
            readers = self._open(self.test_paths)
            trajs = [(f, t) for f, r in enumerate(readers) for t in range(r.n_trajectories)]
            self._sets["test"] = self._windows(readers, trajs)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self._sets[name],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
