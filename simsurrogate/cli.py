"""The ``simsurrogate`` command.

``fit`` / ``validate`` / ``test`` are LightningCLI commands driven by YAML recipes
(``--config recipes/...yaml``; flags override the file; unknown keys are errors that name the
key, raised before any data is read). ``data`` inspects, validates, generates and imports data
files; ``rollout`` advances a trained model from a state in a data file; ``md`` runs
molecular dynamics with a trained potential on the structures of a file.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _lightning(argv: list[str] | None) -> None:
    """Run LightningCLI on ``argv`` (None: it reads ``sys.argv`` itself)."""
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
    )


def _data_info(args: argparse.Namespace) -> int:
    from simsurrogate.data.inspect import info

    print(info(args.file))
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from simsurrogate.data.inspect import validate

    validate(args.file)
    print(f"{args.file}: valid")
    return 0


def _generate_nbody(args: argparse.Namespace) -> dict:
    from simsurrogate.sims.nbody import generate_nbody

    return generate_nbody(
        args.out,
        n_train=args.n_train,
        n_valid=args.n_valid,
        n_test=args.n_test,
        seed=args.seed,
        overwrite=args.overwrite,
    )


def _generate_darcy(args: argparse.Namespace) -> dict:
    from simsurrogate.sims.darcy import generate_darcy

    return generate_darcy(
        args.out,
        n_train=args.n_train,
        n_test=args.n_test,
        seed=args.seed,
        resolution=args.resolution,
        stored_resolutions=tuple(args.stored),
        workers=args.workers,
        overwrite=args.overwrite,
    )


def _generate_burgers(args: argparse.Namespace) -> dict:
    from simsurrogate.sims.burgers import BurgersConfig, generate_burgers

    config = BurgersConfig(viscosity=args.viscosity, resolution=args.resolution)
    return generate_burgers(
        args.out,
        n_train=args.n_train,
        n_test=args.n_test,
        seed=args.seed,
        stored_resolution=args.stored,
        config=config,
        overwrite=args.overwrite,
    )


def _generate_navier_stokes(args: argparse.Namespace) -> dict:
    from simsurrogate.sims.navier_stokes import NavierStokesConfig, generate_navier_stokes

    config = NavierStokesConfig(
        viscosity=args.viscosity,
        t_final=args.t_final,
        dt=args.dt,
        record_every=args.record_every,
        resolution=args.resolution,
        stored_resolution=args.stored,
        scheme=args.scheme,
    )
    return generate_navier_stokes(
        args.out,
        n_train=args.n_train,
        n_test=args.n_test,
        seed=args.seed,
        config=config,
        chunk=args.chunk,
        device=args.device,
        overwrite=args.overwrite,
    )


def _split_options(args: argparse.Namespace) -> dict:
    """Options of the resumable multi-process generators: split sizes, seed, workers."""
    names = ("n_train", "n_valid", "n_test", "seed", "workers", "overwrite")
    return {name: getattr(args, name) for name in names}


def _generate_cylinder_flow(args: argparse.Namespace) -> dict:
    from simsurrogate.sims.cylinder_dataset import CylinderFlowConfig, generate_cylinder_flow

    given = {
        "h_max": args.h_max,
        "h_obstacle": args.h_obstacle,
        **{k: args.__dict__[k] for k in ("radius", "center_x", "center_y", "u_mean")},
    }
    config = CylinderFlowConfig(
        n_steps=args.steps,
        dt=args.dt,
        warmup=args.warmup,
        **{name: tuple(v) if isinstance(v, list) else v for name, v in given.items() if v},
    )
    return generate_cylinder_flow(args.out, config=config, **_split_options(args))


def _comma_list(text: str) -> tuple[str, ...]:
    """``"Cu,Au"`` -> ``("Cu", "Au")`` (argparse type of list options)."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _generate_emt_metals(args: argparse.Namespace) -> dict:
    from simsurrogate.sims.emt_metals import EMTMetalsConfig, generate_emt_metals

    config = EMTMetalsConfig(
        elements=args.elements,
        kinds=args.kinds,
        size_range=tuple(args.size_range),
        temperature_range=tuple(args.temperature_range),
        max_components=args.max_components,
        strain=args.strain,
        md_steps=args.md_steps,
    )
    return generate_emt_metals(args.out, config=config, **_split_options(args))


def _generate_xtb_molecules(args: argparse.Namespace) -> dict:
    from simsurrogate.sims.xtb_molecules import (
        DEFAULT_MOLECULES,
        XTBMoleculesConfig,
        generate_xtb_molecules,
    )

    config = XTBMoleculesConfig(
        molecules=args.molecules or DEFAULT_MOLECULES,
        temperature_range=tuple(args.temperature_range),
        timestep=args.timestep,
        equilibration=args.equilibration,
        interval=args.interval,
        snapshots=args.snapshots,
    )
    return generate_xtb_molecules(args.out, config=config, **_split_options(args))


def _export(args: argparse.Namespace) -> int:
    from simsurrogate.checkpoint import export

    notes = {}
    for item in args.provenance:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--provenance takes KEY=VALUE items, got {item!r}")
        notes[key] = value
    path = export(args.source, args.dest, **notes)
    print(f"{path}: {path.stat().st_size / 2**20:.2f} MiB")
    return 0


def _data_generate(args: argparse.Namespace) -> int:
    for name, path in args.generate(args).items():
        print(f"{name}: {path}")
    return 0


def _data_import(args: argparse.Namespace) -> int:
    if (args.dest is None) == (args.out is None):
        raise ValueError("data import: give the output as DEST or as --out (exactly one)")
    args.dest = args.dest if args.out is None else args.out
    if args.source_format == "deepmind":
        from simsurrogate.data.importers.deepmind import import_deepmind

        try:
            paths = import_deepmind(
                args.source,
                args.dest,
                splits=args.splits,
                max_trajectories=args.max_samples,
                overwrite=args.overwrite,
            )
        except ModuleNotFoundError as exc:
            raise SystemExit(f"simsurrogate data import: {exc}") from None
        for path in paths.values():
            print(f"wrote {path}")
        return 0
    if args.source_format == "pdebench":
        from simsurrogate.data.importers.pdebench import import_pdebench

        path = import_pdebench(
            args.source, args.dest, max_samples=args.max_samples, overwrite=args.overwrite
        )
    else:
        try:
            from simsurrogate.data.importers.ase_import import import_ase
        except ModuleNotFoundError as exc:
            raise SystemExit(
                f"simsurrogate data import needs ASE ({exc}); install 'simsurrogate[atomistic]'"
            ) from None
        path = import_ase(
            args.source, args.dest, index=args.index, format=args.format, overwrite=args.overwrite
        )
    print(f"wrote {path}")
    return 0


def _rollout_kind(checkpoint: Path, data: Path) -> str:
    """Which engine rolls the checkpoint out: "grid" (a grid operator's training task),
    "mesh" (a mesh model) or "particles". A model class this install does not know falls
    back to the data file's schema."""
    from simsurrogate.checkpoint import KEY, read_checkpoint
    from simsurrogate.data._io import attr_text, open_h5
    from simsurrogate.data.mesh import SCHEMA
    from simsurrogate.models.base import SurrogateModel
    from simsurrogate.rollout.grid import is_grid_operator_checkpoint
    from simsurrogate.rollout.mesh import is_mesh_model_class

    meta = read_checkpoint(checkpoint)[KEY]
    if is_grid_operator_checkpoint(meta):
        return "grid"
    name = meta.get("model", {}).get("class")
    if isinstance(name, str) and name in SurrogateModel.registry:
        return "mesh" if is_mesh_model_class(name) else "particles"
    with open_h5(data) as f:
        return "mesh" if attr_text(f.attrs.get("schema", "")) == SCHEMA else "particles"


def _md(args: argparse.Namespace) -> int:
    from simsurrogate.rollout.md.report import run_md

    summary = run_md(
        checkpoint=args.checkpoint,
        structure=args.structure,
        out=args.out,
        ensemble=args.ensemble,
        temperature=args.temperature,
        pressure_bar=args.pressure,
        timestep=args.timestep,
        steps=args.steps,
        write_every=args.write_every,
        friction=args.friction,
        tau_t=args.tau_t,
        tau_p=args.tau_p,
        skin=args.skin,
        min_distance=args.min_distance,
        seed=args.seed,
        index=args.index,
        device=args.device,
        extxyz=args.extxyz,
        compile=args.compile,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"{args.out}: {summary['n_systems']} systems, {summary['steps']} steps, "
        f"{summary['n_stopped']} stopped, {summary['atom_steps_per_second']:.3g} atom-steps/s"
    )
    return 0


def _rollout(args: argparse.Namespace) -> int:
    kind = _rollout_kind(args.checkpoint, args.data)
    extra = {}
    if args.precision != "32":
        if kind != "mesh":
            raise SystemExit(
                f"--precision {args.precision} is for mesh models; this is a {kind} one"
            )
        extra["precision"] = args.precision
    if kind in ("grid", "mesh"):
        if kind == "grid":
            from simsurrogate.rollout.grid_report import grid_rollout_report as report
            from simsurrogate.rollout.grid_report import grid_summary_line as summary
        else:
            from simsurrogate.rollout.mesh_report import mesh_rollout_report as report
            from simsurrogate.rollout.mesh_report import summary_line as summary
        metrics = report(
            checkpoint=args.checkpoint,
            data=args.data,
            trajectory=args.trajectory,
            steps=args.steps,
            start=args.start,
            out=args.out,
            device=args.device,
            **extra,
        )
        print(summary(metrics, args.out))
        return 0
    from simsurrogate.rollout.report import particle_rollout_report

    metrics = particle_rollout_report(
        checkpoint=args.checkpoint,
        data=args.data,
        trajectory=args.trajectory,
        steps=args.steps,
        start=args.start,
        out=args.out,
    )
    print(json.dumps(metrics, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simsurrogate",
        description="Learned physics surrogates. Training: simsurrogate {fit,validate,test} "
        "--config RECIPE.yaml (see `simsurrogate fit --help`).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (recipes in recipes/)", add_help=False)

    data = sub.add_parser("data", help="inspect, validate, generate and import data files")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("info", help="summarise a data file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_data_info)
    p = dsub.add_parser("validate", help="check a data file; names the first problem")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_data_validate)
    gen = dsub.add_parser("generate", help="generate a dataset with a ground-truth simulator")
    gsub = gen.add_subparsers(dest="dataset", required=True)

    def generator(name: str, help: str, func, n_train: int, n_test: int, seed: int):
        p = gsub.add_parser(name, help=help)
        p.add_argument("--out", type=Path, required=True, help="output directory")
        p.add_argument("--n-train", type=int, default=n_train)
        p.add_argument("--n-test", type=int, default=n_test)
        p.add_argument("--seed", type=int, default=seed)
        p.add_argument("--overwrite", action="store_true", help="replace existing files")
        p.set_defaults(func=_data_generate, generate=func)
        return p

    p = generator("nbody", "charged N-body (EGNN paper)", _generate_nbody, 3000, 2000, 43)
    p.add_argument("--n-valid", type=int, default=2000)
    p = generator("burgers", "1-D viscous Burgers (FNO paper)", _generate_burgers, 1000, 200, 0)
    p.add_argument("--viscosity", type=float, default=0.1)
    p.add_argument("--resolution", type=int, default=8192, help="solver grid points")
    p.add_argument("--stored", type=int, default=1024, help="stored grid points")
    p = generator("darcy", "2-D Darcy flow (FNO paper)", _generate_darcy, 1000, 200, 0)
    p.add_argument("--resolution", type=int, default=421, help="solver grid points per side")
    p.add_argument(
        "--stored",
        type=int,
        nargs="+",
        default=[421, 85],
        help="resolutions to write (subsampled from the solver grid)",
    )
    p.add_argument("--workers", type=int, default=1, help="solver processes")
    p = generator(
        "navier-stokes",
        "2-D vorticity on the torus (FNO paper)",
        _generate_navier_stokes,
        1000,
        200,
        0,
    )
    p.add_argument("--viscosity", type=float, default=1e-3, help="1e-3 (T=50), 1e-4, 1e-5")
    p.add_argument("--t-final", type=float, default=50.0, help="horizon; one record per unit time")
    p.add_argument("--dt", type=float, default=1e-4)
    p.add_argument(
        "--scheme",
        choices=["euler", "heun"],
        default="euler",
        help="explicit part of the time step: euler (the paper's) or heun (second order)",
    )
    p.add_argument("--record-every", type=float, default=1.0, help="time between stored states")
    p.add_argument("--resolution", type=int, default=256, help="solver grid points per side")
    p.add_argument("--stored", type=int, default=64, help="stored grid points per side")
    p.add_argument("--chunk", type=int, default=20, help="trajectories solved together")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p = generator(
        "cylinder-flow",
        "flow past a cylinder by FEM (MeshGraphNets CylinderFlow; resumable)",
        _generate_cylinder_flow,
        100,
        10,
        0,
    )
    p.add_argument("--n-valid", type=int, default=10)
    p.add_argument("--steps", type=int, default=600, help="saved steps per trajectory")
    p.add_argument("--dt", type=float, default=0.01, help="time between saved steps (s)")
    p.add_argument("--warmup", type=float, default=1.0, help="unsaved start-up time (s)")
    p.add_argument("--h-max", type=float, help="largest element size (m; default 0.032)")
    p.add_argument(
        "--h-obstacle", type=float, help="element size at the obstacle (m; default 0.007)"
    )
    for name, what, (low, high) in (  # defaults of CylinderFlowConfig, not imported: slow
        ("radius", "obstacle radius (m)", (0.03, 0.06)),
        ("center_x", "obstacle centre x (m)", (0.2, 0.5)),
        ("center_y", "obstacle centre y (m)", (0.13, 0.28)),
        ("u_mean", "mean inflow speed (m/s)", (0.5, 1.0)),
    ):
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            nargs=2,
            metavar=("LOW", "HIGH"),
            help=f"range of the {what}, drawn uniformly (default {low} {high})",
        )
    p.add_argument("--workers", type=int, default=None, help="solver processes (default: cores)")

    p = generator(
        "emt-metals",
        "fcc metals and alloys labelled by ASE EMT (bulk, vacancies, surfaces, MD; resumable)",
        _generate_emt_metals,
        2000,
        200,
        0,
    )
    p.add_argument("--n-valid", type=int, default=200)
    p.add_argument(
        "--elements",
        type=_comma_list,
        default=("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al"),
        help="comma-separated subset of Cu,Ag,Au,Ni,Pd,Pt,Al (default all)",
    )
    p.add_argument(
        "--kinds",
        type=_comma_list,
        default=("bulk", "vacancy", "surface", "md"),
        help="comma-separated subset of bulk,vacancy,surface,md (default all)",
    )
    p.add_argument("--size-range", type=int, nargs=2, default=[8, 64], metavar=("MIN", "MAX"))
    p.add_argument(
        "--temperature-range",
        type=float,
        nargs=2,
        default=[300.0, 1500.0],
        metavar=("LOW", "HIGH"),
        help="MD temperatures (K), drawn uniformly",
    )
    p.add_argument("--max-components", type=int, default=3, help="elements per alloy at most")
    p.add_argument("--strain", type=float, default=0.03, help="largest strain component")
    p.add_argument("--md-steps", type=int, default=100, help="Langevin steps of 2 fs per frame")
    p.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    p = generator(
        "xtb-molecules",
        "small molecules (ASE g2) sampled by MD, labelled by GFN2-xTB (tblite; resumable)",
        _generate_xtb_molecules,
        1000,
        100,
        0,
    )
    p.add_argument("--n-valid", type=int, default=100)
    p.add_argument(
        "--molecules",
        type=_comma_list,
        default=None,
        help="comma-separated g2 names, or g2-hcnof for all closed-shell H/C/N/O/F ones "
        "(default: H2O,NH3,CH4,H2CO,CH3OH,H3CNH2,HCOOH,C2H4,CH3CHO,CH3CH2OH)",
    )
    p.add_argument(
        "--temperature-range",
        type=float,
        nargs=2,
        default=[300.0, 1000.0],
        metavar=("LOW", "HIGH"),
        help="MD temperatures (K), drawn uniformly",
    )
    p.add_argument("--timestep", type=float, default=0.5, help="MD time step (fs)")
    p.add_argument("--equilibration", type=int, default=100, help="MD steps before snapshots")
    p.add_argument("--interval", type=int, default=20, help="MD steps between snapshots")
    p.add_argument("--snapshots", type=int, default=10, help="frames per MD run")
    p.add_argument("--workers", type=int, default=None, help="processes (default: cores)")

    p = dsub.add_parser(
        "import",
        help="import an ASE-readable file (extxyz, traj, db), a PDEBench HDF5 file or a "
        "DeepMind MeshGraphNets dataset directory",
    )
    p.add_argument("source", type=Path)
    p.add_argument("dest", type=Path, nargs="?", help="output file (directory for deepmind)")
    p.add_argument("--out", type=Path, default=None, help="the output, instead of DEST")
    p.add_argument(
        "--from",
        dest="source_format",
        choices=["ase", "pdebench", "deepmind"],
        default="ase",
        help="ase: atomistic frames (particle schema); pdebench: grid fields (The Well layout); "
        "deepmind: meta.json + *.tfrecord directory (mesh schema, one file per split)",
    )
    p.add_argument("--index", default=":", help="ASE index of frames to read (default all)")
    p.add_argument("--format", default=None, help="ASE format name if not guessed from suffix")
    p.add_argument(
        "--max-samples",
        type=int,
        default=None,
        help="PDEBench samples / DeepMind trajectories per split to import",
    )
    p.add_argument(
        "--splits", nargs="+", default=["train", "valid", "test"], help="DeepMind splits"
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_data_import)

    p = sub.add_parser(
        "export",
        help="shippable copy of a training checkpoint: weights and metadata, no optimizer",
        description="Write weights (with normaliser statistics) and metadata of a training "
        "checkpoint, without optimizer or loop state, adding KEY=VALUE provenance notes "
        "(e.g. data=... training_command=...) to the metadata; the copy is checked to load.",
    )
    p.add_argument("source", type=Path, help="training checkpoint (e.g. .../best.ckpt)")
    p.add_argument("dest", type=Path, help="file to write")
    p.add_argument("--provenance", nargs="*", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "rollout",
        help="roll a trained model out from a state in a data file",
        description="Roll a trained model out from a stored state and score it against the "
        "stored truth. Mesh models (MeshGraphNet) write rollout.h5, rollout.xdmf (ParaView), "
        "metrics.json, rollout.png and rollout.gif; grid operators (FNO, U-Net trained as time "
        "steppers on Well files) rollout.nc (netCDF), metrics.json (relative L2 per step and "
        "over the rollout), rollout.png and rollout.gif; particle models rollout.h5, "
        "metrics.json and rollout.png.",
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="file holding the initial state")
    p.add_argument("--trajectory", type=int, default=0)
    p.add_argument(
        "--start",
        type=int,
        default=0,
        help="frame (time step) of the trajectory to start from; for grid operators the first "
        "of the given history snapshots",
    )
    p.add_argument("--steps", type=int, default=1, help="model steps (horizons) to advance")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device for mesh and grid models, e.g. cuda (default cpu)",
    )
    p.add_argument(
        "--precision",
        choices=["32", "bf16-mixed"],
        default="32",
        help="mesh models: bf16-mixed runs the model's products in bfloat16 under autocast, "
        "the state in float32 (default 32)",
    )
    p.set_defaults(func=_rollout)

    p = sub.add_parser(
        "md",
        help="molecular dynamics with a trained potential, all structures of a file batched",
        description="Run MD on every frame of STRUCTURE (anything ase.io.read reads) together, "
        "with the potential in CHECKPOINT. Writes trajectory.h5 (particle schema), md.json "
        "(parameters, per-system status and averages, throughput) and md.png to OUT. Frames "
        "without momenta start from Maxwell-Boltzmann velocities at --temperature.",
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--structure", type=Path, required=True, help="structure file (all frames)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--ensemble", choices=["nve", "nvt", "langevin", "npt"], default="nvt")
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--pressure", type=float, default=1.01325, help="bar (npt)")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--write-every", type=int, default=10, help="steps between frames")
    p.add_argument("--friction", type=float, default=0.01, help="1/fs (langevin, npt)")
    p.add_argument("--tau-t", type=float, default=None, help="fs (nvt; default 100 steps)")
    p.add_argument("--tau-p", type=float, default=1000.0, help="fs (npt)")
    p.add_argument("--skin", type=float, default=1.0, help="neighbour-list skin (Å)")
    p.add_argument(
        "--min-distance", type=float, default=0.5, help="stop a system closer than this (Å)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", default=":", help="ASE index of the frames to run (default all)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--extxyz", action="store_true", help="also write trajectory.extxyz")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_md)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simsurrogate`` console script."""
    from_shell = argv is None
    if from_shell and hasattr(signal, "SIGPIPE"):
        # `simsurrogate data info FILE | head` ends quietly, like other Unix tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = sys.argv[1:] if argv is None else list(argv)
    if from_shell:
        from simsurrogate.rollout.allocator import pad_heap

        pad_heap()  # a process of its own: keep freed memory for reuse (see allocator.py)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        _lightning(None if from_shell else argv)
        return 0
    args = _parser().parse_args(argv)
    from simsurrogate.checkpoint import CheckpointError
    from simsurrogate.data.errors import DataError
    from simsurrogate.rollout.errors import RolloutError

    try:
        return args.func(args)
    except (DataError, CheckpointError, RolloutError, ValueError) as exc:  # bad input, no trace
        print(f"simsurrogate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
