"""Advance particle systems horizon after horizon with a trained particle-dynamics model."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from simsurrogate.checkpoint import load
from simsurrogate.data.nbody import systems_to_graph
from simsurrogate.data.particles import FrameWriter
from simsurrogate.models.base import SurrogateModel
from simsurrogate.rollout.errors import RolloutError


class ParticleRollout:
    """Roll a model that maps (positions, velocities, charges) to the state one horizon later.

    Each call of the model advances every system by the model's horizon (for the N-body
    benchmark, 1000 integration steps). Several horizons in a row need a model that also
    predicts velocities (``predict_velocity=True``); the charges are carried unchanged.

    Example::

        engine = ParticleRollout.from_checkpoint("best.ckpt")
        traj = engine.run(pos, vel, charge, n_horizons=3, out="rollout.h5")
    """

    def __init__(self, model: SurrogateModel, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu"
    ) -> ParticleRollout:
        """Build the engine from a checkpoint file alone."""
        return cls(load(path, map_location=device), device)

    @torch.no_grad()
    def run(
        self,
        pos: Tensor | np.ndarray,
        vel: Tensor | np.ndarray,
        charge: Tensor | np.ndarray,
        n_horizons: int,
        out: str | Path | None = None,
        progress: bool = False,
    ) -> dict[str, Tensor]:
        """Advance ``n_horizons`` times.

        Args:
            pos, vel: (B, N, 3) or (N, 3) positions and velocities of B systems of N particles.
            charge: (B, N) or (N,) charges.
            n_horizons: number of model steps.
            out: optional particle-schema file streamed horizon by horizon (one trajectory per
                system, frame k = state after k horizons), so memory stays flat.

        Returns:
            ``pos`` and ``vel`` of shape (n_horizons + 1, B, N, 3), the initial state first.
        """
        pos, vel, charge = (torch.as_tensor(t, dtype=torch.float32) for t in (pos, vel, charge))
        single = pos.dim() == 2
        if single:
            pos, vel, charge = pos[None], vel[None], charge[None]
        if pos.shape != vel.shape or pos.shape[:2] != charge.shape or pos.shape[-1] != 3:
            raise RolloutError(
                f"shapes do not match: pos {tuple(pos.shape)}, vel {tuple(vel.shape)}, "
                f"charge {tuple(charge.shape)}; expected (B, N, 3), (B, N, 3), (B, N)"
            )
        if n_horizons > 1 and not getattr(self.model, "predict_velocity", False):
            raise RolloutError(
                f"{type(self.model).__name__} predicts positions only; rolling out more than one "
                "horizon needs a model trained with predict_velocity=true"
            )
        b, n = charge.shape
        state = {"pos": pos, "vel": vel, "charge": charge}
        traj_pos, traj_vel = [pos.clone()], [vel.clone()]
        writer_ctx = (
            contextlib.nullcontext(None)
            if out is None
            else FrameWriter(out, overwrite=True, attrs={"rollout": "particles"})
        )
        with writer_ctx as writer:  # an error mid-rollout leaves no file under ``out``
            if writer is not None:
                self._write(writer, state, 0)
            for k in tqdm(range(1, n_horizons + 1), disable=not progress, desc="rollout"):
                graph = systems_to_graph({key: t.to(self.device) for key, t in state.items()})
                pred = self.model(graph)
                new_pos = pred["pos"].reshape(b, n, 3).cpu()
                new_vel = pred["vel"].reshape(b, n, 3).cpu() if "vel" in pred else state["vel"]
                finite = torch.isfinite(new_pos).flatten(1).all(1)
                finite &= torch.isfinite(new_vel).flatten(1).all(1)
                if not finite.all():
                    raise RolloutError(
                        f"non-finite state at horizon {k} in system(s) "
                        f"{torch.nonzero(~finite).flatten().tolist()}"
                    )
                state = {"pos": new_pos, "vel": new_vel, "charge": charge}
                traj_pos.append(new_pos)
                traj_vel.append(new_vel)
                if writer is not None:
                    self._write(writer, state, k)
        result = {"pos": torch.stack(traj_pos), "vel": torch.stack(traj_vel)}
        if single:
            result = {k: v[:, 0] for k, v in result.items()}
        return result

    @staticmethod
    def _write(writer: FrameWriter, state: dict[str, Tensor], horizon: int) -> None:
        b, n = state["charge"].shape
        writer.append(
            n_atoms=np.full(b, n, dtype=np.int64),
            positions=state["pos"].reshape(-1, 3).numpy().astype(np.float64),
            velocities=state["vel"].reshape(-1, 3).numpy().astype(np.float64),
            charges=state["charge"].reshape(-1).numpy().astype(np.float64),
            trajectory=np.arange(b, dtype=np.int64),
            time=np.full(b, float(horizon)),
        )
