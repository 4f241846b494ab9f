"""simsurrogate potentials as an ASE calculator: energy, forces and stress for ASE's
optimizers, MD integrators and anything else that takes a ``Calculator``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ase
import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from simsurrogate.graph.atoms import atoms_graph
from simsurrogate.models.potentials import Potential
from simsurrogate.rollout.md.forcefield import model_dtype, prepare_model

__all__ = ["SimsurrogateCalculator"]


class SimsurrogateCalculator(Calculator):
    """ASE calculator around a :class:`~simsurrogate.models.potentials.Potential`.

    Args:
        model: the potential, or a checkpoint path (rebuilt with ``checkpoint.load``).
        device: torch device the model runs on.
        dtype: float type of the network (None: keep the model's); energies are still
            accumulated in float64.

    Results are in ASE's units: ``energy`` and ``free_energy`` (eV, the same value),
    ``forces`` (N, 3) eV/Å and ``stress`` (Voigt 6, eV/Å³, ASE's sign). Stress is computed
    only when asked for, and only for a cell with volume and at least one periodic direction.
    The neighbour list is searched afresh at every call.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: Potential | str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.model = prepare_model(model, self.device, dtype)
        self.dtype = model_dtype(self.model)

    def calculate(
        self,
        atoms: ase.Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        stress = "stress" in properties
        if stress:
            vol = abs(float(np.linalg.det(atoms.cell.array)))
            if not atoms.pbc.any() or vol < 1e-9:
                raise PropertyNotImplementedError(
                    f"stress needs a periodic cell with volume; {atoms.get_chemical_formula()} "
                    f"has pbc={atoms.pbc.tolist()} and cell volume {vol:.3g} Å³"
                )
        graph = atoms_graph(
            torch.as_tensor(atoms.positions, dtype=self.dtype, device=self.device),
            torch.as_tensor(atoms.numbers, device=self.device),
            torch.as_tensor(atoms.cell.array, dtype=self.dtype, device=self.device)[None],
            torch.as_tensor(atoms.pbc, device=self.device)[None],
            [len(atoms)],
            self.model.cutoff,
        )
        out = self.model(graph, forces=True, stress=stress)
        energy = float(out["energy"][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if stress:
            sigma = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(sigma)
