"""The Well interoperability: simsurrogate's Well files read by the_well's own loader, and VRMSE.

the_well (PolymathicAI's package, pinned below) is the independent reference. It lives in its
own venv, ``out/venvs/the_well`` (built if missing by :func:`anchor_venv.anchor_python`: torch
2.13.0 first, then ``the_well`` under ``-c constraints.txt``; of its ``benchmark`` extra only
matplotlib, which ``the_well.benchmark.metrics`` imports).

1. simsurrogate's :func:`write_well` writes small files into one folder per case: t0, t1 and t2
   fields that vary in time, constant fields (per trajectory and global), a field constant
   along one spatial axis (stored with a length-1 axis), scalars of every kind, PERIODIC, WALL
   and OPEN boundary conditions, in 2-D and 3-D; and the output of simsurrogate's Navier–Stokes
   generator (its ``train`` and ``test`` files, so the loader indexes two files).
2. In the the_well venv, this script (``--probe``) opens each folder with
   ``the_well.data.WellDataset(path=folder)`` (no normalisation, absolute time grid), draws
   every sample and saves its arrays with the (file, trajectory, first step) that the_well
   itself reports for it (recorded by an identity ``transform``).
3. Here the same windows are read with :class:`WellReader` and through :class:`WellWindows`
   (the model-input path): fields, constant fields, scalars, grids, times, names and boundary
   conditions must be equal, bit for bit.
4. VRMSE: simsurrogate's ``vrmse`` against ``the_well.benchmark.metrics.VRMSE`` on the same
   random tensors (1-D, 2-D, 3-D, with a time axis, and a near-constant target where eps
   matters), per sample and channel.

Two more cases document the_well behaviour that simsurrogate's files must avoid (they are
reported, not counted as failures): a field constant along a spatial axis with that axis left
out (as the_well's ``docs/data_format.md`` shows), and constant scalars stored with shape (1,)
(also as those docs show) beside a per-trajectory scalar.

Results: ``benchmarks/results/well_interop.json`` and ``.md``.

    python benchmarks/well_interop.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from anchor_venv import ROOT, anchor_python

THE_WELL_VERSION = "1.2.0"
SAMPLE_KEYS = (
    "input_fields",
    "output_fields",
    "constant_fields",
    "input_scalars",
    "output_scalars",
    "constant_scalars",
    "boundary_conditions",
    "space_grid",
    "input_time_grid",
    "output_time_grid",
)
#: the_well's boundary codes (its ``BoundaryCondition`` enum); OPEN where nothing is said
BC_CODE = {"WALL": 0, "OPEN": 1, "PERIODIC": 2}


# ---------------------------------------------------------------------------- the_well side


class _Recorder:
    """Identity ``transform`` that notes which window the_well loaded for each sample."""

    def __init__(self) -> None:
        self.last: tuple[int, int, int, int] | None = None

    def __call__(self, data, meta):
        self.last = (meta.file_idx, meta.sample_idx, meta.time_idx, meta.time_stride)
        return data


def probe(spec_path: Path, out_dir: Path) -> None:
    """Load every case with ``the_well.data.WellDataset``; compute the_well's VRMSE."""
    import importlib.metadata as md

    import torch
    from the_well.benchmark.metrics import VRMSE
    from the_well.data import WellDataset
    from the_well.data.datasets import WellMetadata

    spec = json.loads(spec_path.read_text())
    report: dict = {
        "versions": {
            "the_well": md.version("the_well"),
            "torch": torch.__version__,
            "h5py": md.version("h5py"),
            "fsspec": md.version("fsspec"),
            "python": platform.python_version(),
        },
        "cases": {},
    }
    for name, case in spec["cases"].items():
        entry = report["cases"][name] = {}
        recorder = _Recorder()
        try:
            ds = WellDataset(
                path=case["folder"],
                n_steps_input=case["n_steps_input"],
                n_steps_output=case["n_steps_output"],
                normalize_time_grid=False,
                transform=recorder,
            )
            meta = dataclasses.asdict(ds.metadata)
            entry["files"] = [str(p) for p in ds.files_paths]
            entry["len"] = len(ds)
            entry["metadata"] = {
                "field_names": [meta["field_names"][i] for i in range(3)],
                "constant_field_names": [meta["constant_field_names"][i] for i in range(3)],
                "scalar_names": meta["scalar_names"],
                "constant_scalar_names": meta["constant_scalar_names"],
                "spatial_resolution": list(meta["spatial_resolution"]),
                "n_trajectories_per_file": meta["n_trajectories_per_file"],
            }
            arrays, windows = {}, []
            for i in range(len(ds)):
                sample = ds[i]
                windows.append([int(v) for v in recorder.last])
                for key, value in sample.items():
                    arrays[f"{i}/{key}"] = value.numpy()
            entry["windows"] = windows
            np.savez(out_dir / f"{name}.npz", **arrays)
        except Exception as exc:  # a loader failure is a finding, reported as such
            entry["error"] = f"{type(exc).__name__}: {exc}"

    vrmse_in = np.load(spec["vrmse_inputs"])
    out = {}
    for name in spec["vrmse_cases"]:
        pred, target = vrmse_in[f"{name}/pred"], vrmse_in[f"{name}/target"]
        d = int(vrmse_in[f"{name}/n_spatial_dims"])
        meta = WellMetadata(
            dataset_name=name,
            n_spatial_dims=d,
            spatial_resolution=tuple(target.shape[-d - 1 : -1]),
            scalar_names=[],
            constant_scalar_names=[],
            field_names={},
            constant_field_names={},
            boundary_condition_types=[],
            n_files=0,
            n_trajectories_per_file=[],
            n_steps_per_trajectory=[],
        )
        value = VRMSE()(torch.from_numpy(pred), torch.from_numpy(target), meta)
        out[name] = value.numpy()
    np.savez(out_dir / "vrmse.npz", **out)
    (out_dir / "report.json").write_text(json.dumps(report))


# ---------------------------------------------------------------------------- cases


def _periodic(d: str) -> dict:
    return {"name": f"{d}_periodic", "bc_type": "PERIODIC", "associated_dims": [d]}


def _end_mask(n: int, end: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[end] = True
    return mask


def write_cases(root: Path) -> dict[str, dict]:
    """Write every case's folder under ``root``; return what each should read back as."""
    import h5py

    from simsurrogate.data.grid import GridField, write_well
    from simsurrogate.sims.navier_stokes import NavierStokesConfig, generate_navier_stokes

    rng = np.random.default_rng(0)
    cases: dict[str, dict] = {}

    # 2-D: every kind of field and scalar, three kinds of boundary
    b, t, nx, ny = 3, 7, 12, 10
    folder = root / "fields_2d"
    folder.mkdir(parents=True)
    a = rng.standard_normal((b, t, nx, ny, 2, 2), dtype=np.float32)
    write_well(
        folder / "fields_2d.hdf5",
        dataset_name="interop_fields_2d",
        dimensions={
            "x": np.linspace(0.0, 1.0, nx, dtype=np.float32),
            "y": np.linspace(0.0, 2.0, ny, dtype=np.float32),
        },
        time=0.5 + 0.1 * np.arange(t, dtype=np.float32),
        fields=[
            GridField("density", rng.random((b, t, nx, ny), dtype=np.float32), 0),
            GridField("obstacle", rng.random((b, nx, ny), dtype=np.float32), 0, True, False),
            GridField("forcing", rng.random((nx, ny), dtype=np.float32), 0, False, False),
            GridField(
                "inflow", rng.random((b, t, nx, 1), dtype=np.float32), 0, dim_varying=(True, False)
            ),
            GridField("velocity", rng.standard_normal((b, t, nx, ny, 2), dtype=np.float32), 1),
            GridField("wind", rng.standard_normal((nx, ny, 2), dtype=np.float32), 1, False, False),
            GridField("stress", rng.standard_normal((b, t, nx, ny, 2, 2), dtype=np.float32), 2),
            GridField("conformation", a + np.swapaxes(a, -1, -2), 2),
        ],
        scalars={
            "energy": rng.random((b, t)),
            "drive": np.sin(np.arange(t, dtype=np.float64)),
            "mass": rng.random(b),
        },
        simulation_parameters={"viscosity": 1e-3, "Re": 150.0},
        boundary_conditions=[
            _periodic("x"),
            {"name": "y_wall", "bc_type": "WALL", "associated_dims": ["y"]}
            | {"mask": _end_mask(ny, 0), "values": np.zeros(1, np.float32)},
            {"name": "y_open", "bc_type": "OPEN", "associated_dims": ["y"]}
            | {"mask": _end_mask(ny, -1)},
        ],
    )
    cases["fields_2d"] = {"n_steps_input": 2, "n_steps_output": 3, "bc": [[2, 2], [0, 1]]}

    # 3-D: t0, t1, t2 components in x, y, z order; walls on every face
    b, t, n = 2, 4, (6, 5, 4)
    folder = root / "fields_3d"
    folder.mkdir(parents=True)
    write_well(
        folder / "fields_3d.hdf5",
        dataset_name="interop_fields_3d",
        dimensions={d: np.arange(k, dtype=np.float32) / k for d, k in zip("xyz", n, strict=True)},
        time=np.arange(t, dtype=np.float32),
        fields=[
            GridField("pressure", rng.random((b, t, *n), dtype=np.float32), 0),
            GridField("velocity", rng.standard_normal((b, t, *n, 3), dtype=np.float32), 1),
            GridField("stress", rng.standard_normal((b, t, *n, 3, 3), dtype=np.float32), 2),
        ],
        scalars={"gamma": 5 / 3},
        boundary_conditions=[
            {"name": f"{d}_wall", "bc_type": "WALL", "associated_dims": [d]} for d in "xyz"
        ],
    )
    cases["fields_3d"] = {"n_steps_input": 1, "n_steps_output": 2, "bc": [[0, 0]] * 3}

    # simsurrogate's Navier–Stokes generator (train and test files in one folder)
    config = NavierStokesConfig(t_final=4.0, dt=2e-2, resolution=32, stored_resolution=16)
    generate_navier_stokes(
        root / "navier_stokes", n_train=2, n_test=1, seed=3, config=config, progress=False
    )
    cases["navier_stokes"] = {"n_steps_input": 2, "n_steps_output": 1, "bc": [[2, 2], [2, 2]]}

    # known the_well behaviour 1: a field constant along y with the y axis left out
    b, t, nx, ny = 2, 4, 6, 5
    coords = {"x": np.arange(nx, dtype=np.float32), "y": np.arange(ny, dtype=np.float32)}
    folder = root / "dropped_axis"
    folder.mkdir(parents=True)
    write_well(
        folder / "dropped_axis.hdf5",
        dataset_name="interop_dropped_axis",
        dimensions=coords,
        time=np.arange(t, dtype=np.float32),
        fields=[
            GridField(
                "inflow", rng.random((b, t, nx), dtype=np.float32), 0, dim_varying=(True, False)
            )
        ],
    )
    cases["dropped_axis"] = {"n_steps_input": 1, "n_steps_output": 1, "bc": [[1, 1], [1, 1]]}
    cases["dropped_axis"]["known"] = (
        "field constant along y stored without its y axis, as the_well's docs/data_format.md "
        "shows (and its export.py expects: read, not run); its WellDataset tiles only a kept "
        "length-1 axis"
    )

    # known the_well behaviour 2: constant scalars stored (1,), as the docs show (and as
    # simsurrogate wrote them before), alone and beside a per-trajectory scalar
    for name, scalars in (
        ("scalar_shape_1", {"Re": 150.0, "Ma": 0.3}),
        ("scalar_shape_1_mixed", {"Re": 150.0, "mass": rng.random(b)}),
    ):
        folder = root / name
        folder.mkdir(parents=True)
        path = write_well(
            folder / f"{name}.hdf5",
            dataset_name=f"interop_{name}",
            dimensions=coords,
            time=np.arange(t, dtype=np.float32),
            fields=[GridField("density", rng.random((b, t, nx, ny), dtype=np.float32), 0)],
            scalars=scalars,
        )
        with h5py.File(path, "r+") as f:
            for key in ("Re", "Ma"):
                if key in f["scalars"]:
                    attrs = dict(f["scalars"][key].attrs)
                    del f["scalars"][key]
                    new = f["scalars"].create_dataset(key, data=np.array([scalars[key]]))
                    new.attrs.update(attrs)
        cases[name] = {"n_steps_input": 1, "n_steps_output": 1, "bc": [[1, 1], [1, 1]]}
    cases["scalar_shape_1"]["known"] = (
        "constant scalars stored with shape (1,) (as the_well's docs/data_format.md shows)"
    )
    cases["scalar_shape_1_mixed"]["known"] = (
        "a constant scalar stored with shape (1,) beside a per-trajectory, time-constant one "
        "(stored (B,), so one trajectory's value is 0-d)"
    )

    for name, case in cases.items():
        case["folder"] = str(root / name)
    return cases


# ---------------------------------------------------------------------------- comparison


def _diff(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Equality of two arrays: shapes, dtypes, exact equality and the largest difference."""
    row = {
        "shape": list(theirs.shape),
        "shape_ours": list(ours.shape),
        "dtype": str(theirs.dtype),
        "dtype_ours": str(ours.dtype),
    }
    same_shape = ours.shape == theirs.shape
    row["equal"] = bool(same_shape and np.array_equal(ours, theirs))
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64)) if same_shape else None
    row["max_abs_diff"] = None if diff is None else float(diff.max(initial=0.0))
    return row


def _merge(rows: list[dict]) -> dict:
    """One row for a key over all samples."""
    out = dict(rows[0])
    out["equal"] = all(r["equal"] for r in rows)
    diffs = [r["max_abs_diff"] for r in rows]
    out["max_abs_diff"] = None if None in diffs else max(diffs)
    return out


def our_sample(reader, traj: int, start: int, n_in: int, n_out: int) -> dict[str, np.ndarray]:
    """The window the_well returns, built from :class:`WellReader` (channels last)."""
    length = n_in + n_out
    window = reader.window(traj, start, length)
    varying = [[], [], []]
    constant = [[], [], []]
    for name, info in reader.fields.items():  # file order within each tensor order
        (varying if info.time_varying else constant)[info.order].append(name)
    shape = reader.spatial_shape
    fields = [window[k].reshape(length, *shape, -1) for names in varying for k in names]
    const = [window[k][0].reshape(*shape, -1) for names in constant for k in names]
    scalars = reader.scalars(traj)
    t_scalars = [v[start : start + length] for v in scalars.values() if v.ndim == 1]
    c_scalars = [v for v in scalars.values() if v.ndim == 0]
    stacked = np.concatenate(fields, axis=-1)
    times = reader.time(traj)[start : start + length]
    out = {
        "input_fields": stacked[:n_in],
        "output_fields": stacked[n_in:],
        "space_grid": np.stack(np.meshgrid(*reader.coordinates(traj).values(), indexing="ij"), -1),
        "input_time_grid": times[:n_in],
        "output_time_grid": times[n_in:],
    }
    if const:
        out["constant_fields"] = np.concatenate(const, axis=-1)
    if t_scalars:
        scal = np.stack(t_scalars, axis=-1)
        out["input_scalars"], out["output_scalars"] = scal[:n_in], scal[n_in:]
    if c_scalars:
        out["constant_scalars"] = np.stack(c_scalars)
    return out


def compare_case(name: str, case: dict, theirs: dict, arrays) -> dict:
    """Every check of one case: names, window indexing, arrays, boundary conditions."""
    import torch

    from simsurrogate.data.grid import WellReader
    from simsurrogate.data.well import WellWindows

    n_in, n_out = case["n_steps_input"], case["n_steps_output"]
    result: dict = {"n_steps_input": n_in, "n_steps_output": n_out}
    if "known" in case:
        result["known"] = case["known"]
    if "error" in theirs:
        result["the_well_error"] = theirs["error"]
        result["agree"] = False
        return result
    readers = [WellReader(p) for p in theirs["files"]]
    result["files"] = [Path(p).name for p in theirs["files"]]
    meta = theirs["metadata"]
    r0 = readers[0]
    scalars0 = r0.scalars(0)
    names = {
        "field_names": [r0.field_names[i] for i in range(3)],
        "constant_field_names": [r0.constant_field_names[i] for i in range(3)],
        "scalar_names": [k for k, v in scalars0.items() if v.ndim == 1],
        "constant_scalar_names": [k for k, v in scalars0.items() if v.ndim == 0],
        "spatial_resolution": list(r0.spatial_shape),
        "n_trajectories_per_file": [r.n_trajectories for r in readers],
    }
    result["names"] = {k: {"the_well": meta[k], "equal": meta[k] == v} for k, v in names.items()}

    # the windows: the_well's (file, trajectory, start) for sample i against WellWindows item i
    tv = [k for k, info in r0.fields.items() if info.time_varying]
    tv = [k for order in range(3) for k in tv if r0.fields[k].order == order]
    trajs = [(f, j) for f, r in enumerate(readers) for j in range(r.n_trajectories)]
    windows = WellWindows(readers, trajs, tv, tv, history=n_in, target_offset=1, horizon=n_out)
    ours_items = [list(item) for item in windows.items]
    theirs_items = [w[:3] for w in theirs["windows"]]
    result["windows"] = {
        "count": theirs["len"],
        "count_ours": len(windows),
        "strides": sorted({w[3] for w in theirs["windows"]}),
        "same_order": ours_items == theirs_items,
    }

    rows: dict[str, list[dict]] = {}
    for i, (f, traj, start, _) in enumerate(theirs["windows"]):
        ours = our_sample(readers[f], traj, start, n_in, n_out)
        got = {k.split("/", 1)[1]: arrays[k] for k in arrays.files if k.startswith(f"{i}/")}
        for key in SAMPLE_KEYS:
            if key == "boundary_conditions":
                continue
            if key not in got and key not in ours:
                continue
            empty = np.zeros((0,))
            rows.setdefault(key, []).append(_diff(ours.get(key, empty), got.get(key, empty)))
        expected_bc = np.asarray(case["bc"], dtype=np.float32)
        rows.setdefault("boundary_conditions", []).append(
            _diff(expected_bc, got["boundary_conditions"])
        )
        # the model-input path: WellWindows' channels-first, step-major x and y
        x, y = windows[i]
        for key, mine in (("input_fields", x), ("output_fields", y)):
            flat = np.zeros((0,), np.float32)  # the_well leaves out an empty entry
            if key in got:  # (steps, *spatial, C) -> (steps * C, *spatial)
                t = torch.from_numpy(got[key]).movedim(-1, 1)
                flat = t.reshape(-1, *t.shape[2:]).numpy()
            rows.setdefault(f"well_windows_{key}", []).append(_diff(mine.numpy(), flat))
    result["arrays"] = {key: _merge(r) for key, r in rows.items()}

    # boundary conditions as simsurrogate reads them back
    bcs = [
        {"name": bc["name"], "bc_type": bc["bc_type"], "associated_dims": bc["associated_dims"]}
        | {"mask_true_at": np.flatnonzero(bc["mask"]).tolist()}
        for bc in r0.boundary_conditions
    ]
    result["boundary_conditions_read_by_simsurrogate"] = bcs
    for r in readers:
        r.close()
    result["agree"] = (
        all(v["equal"] for v in result["names"].values())
        and result["windows"]["same_order"]
        and result["windows"]["count"] == result["windows"]["count_ours"]
        and all(v["equal"] for v in result["arrays"].values())
    )
    return result


# ---------------------------------------------------------------------------- VRMSE


def vrmse_inputs() -> dict[str, dict]:
    """Random (pred, target) pairs, channels first (B, C, *spatial), float32."""
    rng = np.random.default_rng(1)

    def pair(shape, scales, noise=0.3):
        target = rng.standard_normal(shape).astype(np.float32)
        target *= np.asarray(scales, np.float32).reshape(1, -1, *[1] * (len(shape) - 2))
        target += rng.standard_normal(shape[:2] + (1,) * (len(shape) - 2)).astype(np.float32)
        spread = target.std(axis=tuple(range(2, len(shape))), keepdims=True)
        pred = target + noise * rng.standard_normal(shape).astype(np.float32) * spread
        return pred.astype(np.float32), target

    cases = {
        "1d_B5_C2_n100": pair((5, 2, 100), [1.0, 10.0]),
        "2d_B4_C3_32x24": pair((4, 3, 32, 24), [1e-3, 1.0, 1e3]),
        "3d_B2_C2_10x9x8": pair((2, 2, 10, 9, 8), [1.0, 0.1]),
        "2d_B2T3_C2_16x16": pair((6, 2, 16, 16), [1.0, 5.0]),  # (B, T) folded for us
    }
    # near-constant target: its variance (~1e-10) is below eps = 1e-7, so eps decides
    target = 2.0 + 1e-5 * rng.standard_normal((3, 2, 20, 20)).astype(np.float32)
    pred = target + 1e-4 * rng.standard_normal(target.shape).astype(np.float32)
    cases["2d_near_constant_B3_C2_20x20"] = (pred.astype(np.float32), target.astype(np.float32))
    out = {}
    for name, (pred, target) in cases.items():
        d = pred.ndim - 2
        if "B2T3" in name:  # the_well: (B, T, *spatial, C)
            theirs = [np.moveaxis(a.reshape(2, 3, *a.shape[1:]), 2, -1) for a in (pred, target)]
        else:  # the_well: (B, *spatial, C)
            theirs = [np.moveaxis(a, 1, -1) for a in (pred, target)]
        out[name] = {"pred": pred, "target": target, "theirs": theirs, "n_spatial_dims": d}
    return out


def compare_vrmse(inputs: dict[str, dict], theirs: dict[str, np.ndarray]) -> dict:
    """Ours per (sample, channel) against the_well's, with and without Bessel's correction."""
    import torch

    from simsurrogate.tasks.losses import vrmse

    out = {}
    for name, case in inputs.items():
        pred, target = torch.from_numpy(case["pred"]), torch.from_numpy(case["target"])
        bsz, channels = pred.shape[:2]
        n = int(np.prod(pred.shape[2:]))
        per = {}
        for unbiased in (False, True):
            per[unbiased] = np.array(
                [
                    [
                        float(
                            vrmse(
                                pred[i : i + 1, c : c + 1],
                                target[i : i + 1, c : c + 1],
                                1e-7,
                                unbiased,
                            )
                        )
                        for c in range(channels)
                    ]
                    for i in range(bsz)
                ]
            )
        ref = theirs[name].reshape(bsz, channels).astype(np.float64)
        rel = np.abs(per[True] - ref) / np.abs(ref)
        ratio = per[False] / ref
        out[name] = {
            "shape_ours": list(pred.shape),
            "shape_the_well": list(case["theirs"][1].shape),
            "the_well_output_shape": list(theirs[name].shape),
            "grid_points_N": n,
            "the_well_mean": float(ref.mean()),
            "ours_unbiased_mean": float(vrmse(pred, target, unbiased=True)),
            "ours_default_mean": float(vrmse(pred, target)),
            "unbiased_max_abs_diff": float(np.abs(per[True] - ref).max()),
            "unbiased_max_rel_diff": float(rel.max()),
            "default_over_the_well_min": float(ratio.min()),
            "default_over_the_well_max": float(ratio.max()),
            "sqrt_N/(N-1)": float(np.sqrt(n / (n - 1))),
        }
    return out


# ---------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    lines = [
        "# The Well interoperability: simsurrogate against the_well "
        + result["versions"]["the_well"]["the_well"],
        "",
        "simsurrogate's `write_well` wrote each case; the_well's own `WellDataset(path=folder)` "
        "(in its own venv; no normalisation, `normalize_time_grid=False`) drew every sample, and "
        "simsurrogate's `WellReader` and `WellWindows` read the same windows (the_well's "
        "(file, trajectory, start) for each sample, recorded by an identity `transform`). "
        "Equality is exact (`np.array_equal`, same dtype).",
        "",
        "| case | windows (the_well / ours, same order) | field, scalar names | arrays compared "
        "| all equal | max abs diff | agree |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in result["cases"].items():
        if "the_well_error" in c:
            lines.append(f"| {name} | the_well fails: `{c['the_well_error']}` | | | | | no |")
            continue
        w = c["windows"]
        names_ok = all(v["equal"] for v in c["names"].values())
        arrays = c["arrays"]
        diffs = [v["max_abs_diff"] for v in arrays.values()]
        worst = "shape differs" if None in diffs else f"{max(diffs):.1e}"
        lines.append(
            f"| {name} | {w['count']} / {w['count_ours']}, {'yes' if w['same_order'] else 'NO'} "
            f"| {'equal' if names_ok else 'DIFFER'} | {', '.join(arrays)} "
            f"| {'yes' if all(v['equal'] for v in arrays.values()) else 'NO'} | {worst} "
            f"| {'yes' if c['agree'] else 'no'} |"
        )
    lines += ["", "Cases that document the_well behaviour (not simsurrogate's default output):", ""]
    for name, c in result["cases"].items():
        if "known" in c:
            got = c.get("the_well_error") or ", ".join(
                f"{k}: the_well {v['shape']} vs {v['shape_ours']}"
                for k, v in c.get("arrays", {}).items()
                if not v["equal"]
            )
            lines.append(f"- **{name}**: {c['known']}. the_well gives: {got or 'equal'}.")
    lines += [
        "",
        "## VRMSE",
        "",
        "simsurrogate `vrmse` per (sample, channel) against `the_well.benchmark.metrics.VRMSE` "
        "(channels last, one value per sample [and step] and channel), same float32 tensors, "
        "eps = 1e-7.",
        "",
        "| case | N | the_well mean | ours (unbiased=True) | max rel. diff (unbiased=True) "
        "| ours (default) / the_well | sqrt(N/(N-1)) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in result["vrmse"].items():
        lines.append(
            f"| {name} | {v['grid_points_N']} | {v['the_well_mean']:.6g} "
            f"| {v['ours_unbiased_mean']:.6g} | {v['unbiased_max_rel_diff']:.1e} "
            f"| {v['default_over_the_well_min']:.7f} .. {v['default_over_the_well_max']:.7f} "
            f"| {v['sqrt_N/(N-1)']:.7f} |"
        )
    lines += ["", "## Findings", ""] + [f"- {f}" for f in result["findings"]]
    lines += [
        "",
        "Versions: "
        + "; ".join(
            f"{side}: " + ", ".join(f"{k} {v}" for k, v in vers.items())
            for side, vers in result["versions"].items()
        )
        + ".",
        "",
        f"Wall time {result['wall_time_s']:.0f} s (not counting a venv build) on "
        f"{result['machine']}.",
        "",
        f"`{result['command']}`",
        "",
    ]
    return "\n".join(lines)


FINDINGS = [
    "Constant scalars: simsurrogate wrote them with shape (1,), as the_well's "
    "docs/data_format.md shows; from such a file the_well's WellDataset returns "
    "`constant_scalars` of shape (1, n) instead of (n,) (case scalar_shape_1), and fails "
    "(`torch.concatenate`: 'Tensors must have same number of dimensions') when such a scalar "
    "sits beside a per-trajectory one (case scalar_shape_1_mixed). the_well's own dummy data "
    "(`the_well/utils/dummy_data.py`) store them 0-d. Fixed in simsurrogate: `write_well` now "
    "writes constant scalars 0-d (cases fields_2d, fields_3d, navier_stokes); `WellReader` "
    "still reads (1,).",
    "A field constant along a spatial axis (`dim_varying` False there): the_well's "
    "docs/data_format.md leaves the axis out, and so does its `export.py` (read, not run here), "
    "while its `WellDataset` only tiles a kept length-1 axis: given the axis left out it "
    "returns arrays of the wrong shape without an error (case dropped_axis). simsurrogate "
    "reads both and writes either (`GridField` data with the axis of length 1, as in case "
    "fields_2d, which the_well's loader reads exactly, or without it, the default); not "
    "changed.",
    "VRMSE: the_well 1.2.0 divides by `torch.std(target) ** 2`, the variance with Bessel's "
    "correction (N - 1 for N grid points), where the paper's formula and simsurrogate's default "
    "use the plain mean over the grid; otherwise the same: mean over the spatial axes only, "
    "eps = 1e-7 added to the variance, one value per sample (and step) and channel in "
    "the_well (simsurrogate then averages them). With `unbiased=True` (added for this) "
    "simsurrogate agrees with the_well to float32 rounding; its default is sqrt(N / (N - 1)) "
    "times the_well's value (+1.2e-4 relative at 64 x 64) where the target's variance is well "
    "above eps, and closer to it where eps dominates (near-constant target).",
    "Boundary conditions: the_well reduces them to one code per face of each dim (WALL 0, "
    "OPEN 1, PERIODIC 2; OPEN where no condition is given) from the mask at each end; "
    "simsurrogate's files give the expected code on every face in every case, and "
    "`WellReader` returns the types, dims and masks that were written.",
    "PDEBench: the_well 1.2.0 ships no PDEBench loader or converter (only a UNet adapted from "
    "PDEBench's code), so the PDEBench importer is not cross-checked here.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=ROOT / "out" / "venvs" / "the_well")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--probe", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(*args.probe)
        return

    import h5py
    import torch
    from fno_resolution import machine

    import simsurrogate

    # matplotlib alone of the "benchmark" extra: the_well.benchmark.metrics imports it
    python = anchor_python(
        args.venv,
        [f"the_well=={THE_WELL_VERSION}", "matplotlib>=3.8,<4"],
        "import the_well.data, the_well.benchmark.metrics, torch",
    )
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = write_cases(tmp / "cases")
        vin = vrmse_inputs()
        np.savez(
            tmp / "vrmse_in.npz",
            **{f"{k}/pred": v["theirs"][0] for k, v in vin.items()},
            **{f"{k}/target": v["theirs"][1] for k, v in vin.items()},
            **{f"{k}/n_spatial_dims": np.int64(v["n_spatial_dims"]) for k, v in vin.items()},
        )
        spec = {"cases": cases, "vrmse_inputs": str(tmp / "vrmse_in.npz"), "vrmse_cases": list(vin)}
        (tmp / "spec.json").write_text(json.dumps(spec))
        exchange = tmp / "exchange"
        exchange.mkdir()
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        cmd = [str(python), __file__, "--probe", str(tmp / "spec.json"), str(exchange)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"the_well probe failed:\n{proc.stderr[-4000:]}")
        report = json.loads((exchange / "report.json").read_text())
        results = {}
        for name, case in cases.items():
            npz = exchange / f"{name}.npz"
            arrays = np.load(npz) if npz.exists() else None
            results[name] = compare_case(name, case, report["cases"][name], arrays)
            verdict = "agree" if results[name]["agree"] else "DIFFER"
            known = " (documents the_well behaviour)" if "known" in case else ""
            print(f"{name}: {verdict}{known}", flush=True)
        vrmse = compare_vrmse(vin, dict(np.load(exchange / "vrmse.npz")))

    expected = [n for n, c in cases.items() if "known" not in c]
    result = {
        "benchmark": f"The Well interoperability, simsurrogate vs the_well {THE_WELL_VERSION}",
        "command": " ".join(["python", "benchmarks/well_interop.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": {
            "the_well": report["versions"],
            "simsurrogate": {
                "simsurrogate": simsurrogate.__version__,
                "torch": torch.__version__,
                "h5py": h5py.__version__,
                "python": platform.python_version(),
            },
        },
        "all_expected_cases_agree": all(results[n]["agree"] for n in expected),
        "vrmse_unbiased_max_rel_diff": max(v["unbiased_max_rel_diff"] for v in vrmse.values()),
        "cases": results,
        "vrmse": vrmse,
        "findings": FINDINGS,
        "wall_time_s": time.time() - start,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "well_interop.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "well_interop.md").write_text(markdown(result))
    print(
        f"expected cases agree: {result['all_expected_cases_agree']}; VRMSE (unbiased) max rel. "
        f"diff {result['vrmse_unbiased_max_rel_diff']:.1e}; wall time {result['wall_time_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
