"""Shared machinery of the atomistic reference-data generators (EMT metals, xTB molecules).

A generator describes its data by one function ``make_chunk(split, start, stop)`` that
returns the fields (see :func:`simsurrogate.data.particles.write_frames`) of frames
``start..stop-1`` of a split. Every frame (or MD run) draws its randomness from
:func:`frame_rng`, seeded by (seed, split, index) alone, so the data do not depend on the
chunking, the worker count or the order of completion, and the three splits come from
independent random streams.

:func:`generate_splits` runs the chunks in worker processes, writes each finished chunk at once
to ``<out>/parts/<split>/<start>.h5`` (atomically), and merges the parts of a complete split
into ``<out>/<split>.h5``. A killed run keeps its finished parts; the same command computes only
the missing ones. Parts record a fingerprint of the generator's parameters, so parts left by a
run with other parameters are recomputed rather than mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from simsurrogate.data.errors import DataError
from simsurrogate.data.particles import FrameReader, FrameWriter, write_frames

SPLITS = ("train", "valid", "test")
_SPLIT_IDS = {name: k for k, name in enumerate(SPLITS)}

#: make_chunk(split, start, stop) -> fields of frames start..stop-1 of that split
ChunkFn = Callable[[str, int, int], dict[str, np.ndarray]]


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Random stream of one frame or MD run, seeded by (seed, split, index) only."""
    return np.random.default_rng([seed, _SPLIT_IDS[split], index])


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of the packages that shape the data (recorded in the files)."""
    out = {}
    for name in ("simsurrogate", "numpy", "h5py", *packages):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def check_range(name: str, values: tuple[float, float], low: float = 0.0) -> tuple[float, float]:
    """Return a (lo, hi) range as floats; raise ValueError unless low < lo <= hi, finite."""
    try:
        lo, hi = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers (low, high), got {values!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and low < lo <= hi):
        raise ValueError(f"{name} must satisfy {low} < low <= high, got {(lo, hi)}")
    return lo, hi


def stack_frames(frames: list[dict[str, Any]], per_atom: Collection[str]) -> dict[str, np.ndarray]:
    """Concatenate per-frame dicts into write_frames fields.

    Each dict holds ``positions`` (n, 3) and the fields named in ``per_atom`` with n rows, and
    per-frame values (scalars or small arrays). Returns ``n_atoms`` (F,), per-atom fields
    concatenated and per-frame fields stacked.
    """
    out = {"n_atoms": np.array([len(f["positions"]) for f in frames], dtype=np.int64)}
    for key in frames[0]:
        values = [np.asarray(f[key]) for f in frames]
        out[key] = np.concatenate(values) if key in per_atom else np.stack(values)
    return out


def thermalize(atoms: Any, temperature: float, rng: np.random.Generator) -> None:
    """Give ``atoms`` Maxwell–Boltzmann momenta at ``temperature`` K, without net momentum."""
    from ase.md import velocitydistribution as vd

    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.29
        vd.thermalize_momenta(atoms, temperature, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    vd.Stationary(atoms)


def _fingerprint(parameters: Mapping[str, Any]) -> str:
    text = json.dumps(parameters, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _part_ok(path: Path, n_frames: int, fingerprint: str) -> bool:
    """A finished part of this run: readable, ``n_frames`` frames, same parameters."""
    if not path.exists():
        return False
    try:
        with FrameReader(path) as reader:
            return len(reader) == n_frames and reader.attrs.get("fingerprint") == fingerprint
    except (DataError, OSError):
        return False


def _write_part(
    make_chunk: ChunkFn,
    split: str,
    start: int,
    stop: int,
    path: Path,
    fingerprint: str,
    per_frame: Collection[str],
    units: Mapping[str, str],
) -> int:
    """Compute frames start..stop-1 of ``split`` and write them to ``path``; return the count."""
    fields = make_chunk(split, start, stop)
    write_frames(
        path,
        attrs={"fingerprint": fingerprint},
        units=dict(units),
        overwrite=True,
        per_frame=per_frame,
        **fields,
    )
    return stop - start


def _single_threaded() -> None:
    """Worker initializer: one OpenMP/BLAS thread per process (the pool is the parallelism)."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"


def generate_splits(
    out: str | Path,
    *,
    name: str,
    counts: Mapping[str, int],
    chunk_frames: int,
    make_chunk: ChunkFn,
    attrs: Mapping[str, Any],
    per_frame: Collection[str] = (),
    units: Mapping[str, str] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``<split>.h5`` particle files under ``out`` for every split with a count > 0.

    ``counts`` maps split names to frame counts; frames are made in chunks of ``chunk_frames``
    by ``make_chunk`` (a picklable callable) in ``workers`` processes (None: one per core; 1:
    in this process). ``per_frame`` names the extra per-frame fields and ``units`` the units
    of fields ASE's defaults do not cover. ``attrs`` (generator, parameters, versions...) go
    into every file, with ``split`` and a ``fingerprint`` of ``attrs``. An existing split
    file made with the same attributes and count is kept; one made with others is an error
    unless ``overwrite``, which also discards unmerged parts.
    """
    out = Path(out)
    unknown = sorted(set(counts) - set(SPLITS))
    if unknown:
        raise ValueError(f"{name}: unknown splits {unknown}; expected {list(SPLITS)}")
    for split, count in counts.items():
        if not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(
                f"{name}: number of {split} frames must be an integer >= 0, got {count}"
            )
    if chunk_frames < 1:
        raise ValueError(f"{name}: chunk_frames must be >= 1, got {chunk_frames}")
    if workers is not None and workers < 1:
        raise ValueError(f"{name}: workers must be >= 1, got {workers}")
    if overwrite:
        shutil.rmtree(out / "parts", ignore_errors=True)
        for split in SPLITS:
            (out / f"{split}.h5").unlink(missing_ok=True)
    units = dict(units or {})
    part_print = _fingerprint(dict(attrs))  # parts do not depend on the counts
    paths: dict[str, Path] = {}
    prints: dict[str, str] = {}
    todo: list[tuple[str, int, int, Path]] = []
    for split, count in counts.items():
        if count == 0:
            continue
        paths[split] = out / f"{split}.h5"
        prints[split] = _fingerprint({**attrs, "split": split, "n_frames": int(count)})
        if paths[split].exists():
            with FrameReader(paths[split]) as reader:
                if reader.attrs.get("fingerprint") != prints[split]:
                    raise DataError(
                        f"exists but was made with other {name} parameters or counts; pass "
                        "--overwrite (overwrite=True) to replace it",
                        path=paths[split],
                    )
            continue
        for start in range(0, count, chunk_frames):
            stop = min(start + chunk_frames, count)
            part = out / "parts" / split / f"{start:09d}.h5"
            if not _part_ok(part, stop - start, part_print):
                todo.append((split, start, stop, part))
    bar = tqdm(
        total=sum(stop - start for _, start, stop, _ in todo),
        desc=f"{name} frames",
        unit="frame",
        disable=not progress,
    )
    workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))
    try:
        if workers == 1:
            for split, start, stop, part in todo:
                try:
                    bar.update(
                        _write_part(
                            make_chunk, split, start, stop, part, part_print, per_frame, units
                        )
                    )
                except Exception as exc:
                    raise _failure(name, split, start, stop, out, exc) from exc
        else:
            ctx = get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_single_threaded) as pool:
                futures = {
                    pool.submit(
                        _write_part,
                        make_chunk,
                        split,
                        start,
                        stop,
                        part,
                        part_print,
                        per_frame,
                        units,
                    ): (split, start, stop)
                    for split, start, stop, part in todo
                }
                for future in as_completed(futures):
                    exc = future.exception()
                    if exc is not None:  # finished parts stay on disk; a re-run continues
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise _failure(name, *futures[future], out, exc) from exc
                    bar.update(future.result())
    finally:
        bar.close()
    for split, count in counts.items():
        if count == 0 or paths[split].exists():
            continue
        file_attrs = {**attrs, "split": split, "fingerprint": prints[split]}
        with FrameWriter(
            paths[split], attrs=file_attrs, units=units, per_frame=per_frame
        ) as writer:
            for start in range(0, count, chunk_frames):
                with FrameReader(out / "parts" / split / f"{start:09d}.h5") as reader:
                    writer.append(**reader.frames(np.arange(len(reader))))
        shutil.rmtree(out / "parts" / split)
    if (out / "parts").exists() and not any((out / "parts").iterdir()):
        (out / "parts").rmdir()
    return paths


def _failure(name: str, split: str, start: int, stop: int, out: Path, exc: Exception) -> Exception:
    """The error a failed chunk raises: which frames, why, and that finished work is kept."""
    return RuntimeError(
        f"{name}: {split} frames {start}-{stop - 1} failed: {type(exc).__name__}: {exc}. "
        f"Finished chunks are kept under {out / 'parts'}; re-run the same command to continue."
    )
