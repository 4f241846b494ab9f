"""MeshGraphNet training throughput: simsurrogate against NVIDIA PhysicsNeMo, same run.

Both models are the MeshGraphNets CylinderFlow size (15 message-passing steps, latent 128,
MLPs with 2 hidden layers, LayerNorm, sum aggregation; 2,333,059 parameters each, checked)
on the same cylinder-flow mesh from :func:`simsurrogate.sims.cylinder_flow.make_mesh`, with
the same inputs (11 node features, 3 edge features, 3 outputs). One training step is
forward, MSE loss, backward and an Adam update, on one graph (the paper's batch). Each
configuration runs in its own subprocess with the same thread count, repetitions interleaved
(ours, theirs, ours, theirs, ...), and the median time per step is reported with peak
resident memory.

PhysicsNeMo runs from its own virtual environment (default ``out/venvs/physicsnemo``), which
``--build-anchor`` makes: torch 2.13.0 first, then ``nvidia-physicsnemo`` and
``torch_geometric`` under the torch constraint, ``torch_scatter`` built from source against
that torch (about 5 min on 2 cores), and torchvision removed (its registry build does not load
with this torch). PhysicsNeMo imports ``timm`` (which needs torchvision) for its transformer
layers; the worker replaces it with a stub module, as the MeshGraphNet uses none of it.

    python benchmarks/mgn_speed.py --build-anchor       # once
    python benchmarks/mgn_speed.py                      # writes benchmarks/results/mgn_speed.*
    python benchmarks/mgn_speed.py --device cuda --steps 50
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NODE_IN, EDGE_IN, OUT = 11, 3, 3  # velocity + 9 node types; rel. position + length; du, p


def _mesh(path: Path) -> None:
    """Write the benchmark graph (a default cylinder-flow mesh) to ``path`` (npz)."""
    import numpy as np

    from simsurrogate.graph import cells_to_edges
    from simsurrogate.sims.cylinder_flow import ChannelGeometry, make_mesh

    points, cells = make_mesh(ChannelGeometry(length=1.6, center=(0.33, 0.2), radius=0.05))
    edges = cells_to_edges(cells).numpy()
    rng = np.random.default_rng(0)
    np.savez(
        path,
        edge_index=edges,
        node_x=rng.normal(size=(len(points), NODE_IN)).astype(np.float32),
        edge_x=rng.normal(size=(edges.shape[1], EDGE_IN)).astype(np.float32),
        target=rng.normal(size=(len(points), OUT)).astype(np.float32),
    )


def _worker(args: argparse.Namespace) -> None:
    """Time training steps of one implementation; print one JSON line."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = np.load(args.graph)
    device = torch.device(args.device)
    node_x, edge_x, target = (
        torch.as_tensor(data[k], device=device) for k in ("node_x", "edge_x", "target")
    )
    edge_index = torch.as_tensor(data["edge_index"], device=device)
    concat = args.concat_trick
    if args.worker == "simsurrogate":
        from simsurrogate.models.meshgraphnet import EncodeProcessDecode

        model = EncodeProcessDecode(NODE_IN, {"mesh": EDGE_IN}, OUT, concat_trick=concat)
        if args.compile:
            model.compile(dynamic=True)
        indices = {"mesh": edge_index}

        def forward() -> torch.Tensor:
            return model(node_x, {"mesh": edge_x}, indices)
    else:
        import types

        class _Stub(types.ModuleType):
            """Stands in for timm (and its submodules): any attribute is a dummy class."""

            def __getattr__(self, name: str) -> type:
                if name.startswith("__"):
                    raise AttributeError(name)
                return type(name, (), {})

        for name in (
            "timm",
            "timm.layers",
            "timm.layers.attention",
            "timm.models",
            "timm.models.swin_transformer",
        ):
            sys.modules[name] = _Stub(name)
        from physicsnemo.models.meshgraphnet import MeshGraphNet
        from torch_geometric.data import Data

        model = MeshGraphNet(NODE_IN, EDGE_IN, OUT, do_concat_trick=concat)
        graph = Data(edge_index=edge_index, num_nodes=node_x.shape[0])

        def forward() -> torch.Tensor:
            return model(node_x, edge_x, graph)

    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    bf16 = args.precision == "bf16-mixed"

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward()
        loss = torch.nn.functional.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    print(
        json.dumps(
            {
                "params": sum(p.numel() for p in model.parameters()),
                "median_s": statistics.median(times),
                "peak_mib": peak,
                "nodes": int(node_x.shape[0]),
                "edges": int(edge_index.shape[1]),
                "torch": torch.__version__,
            }
        )
    )


def _build_anchor(venv: Path) -> None:
    """Create the PhysicsNeMo venv (see the module docstring)."""
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    constraint = ["-c", str(ROOT / "constraints.txt")]
    wheels = venv.parent / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        pip + ["--upgrade", "pip", "setuptools>=77.0.3", "wheel"],
        pip + ["torch==2.13.0"],
        pip + constraint + ["nvidia-physicsnemo==2.2.2", "torch_geometric"],
        [str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "torchvision"],
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-build-isolation",
            "--no-deps",
            "-w",
            str(wheels),
            "torch-scatter",
        ],
    ]
    for cmd in steps:
        subprocess.run(cmd, check=True)
    subprocess.run(pip + constraint + [str(next(wheels.glob("torch_scatter*.whl")))], check=True)


def _run(
    python: str,
    impl: str,
    concat: bool,
    precision: str,
    graph: Path,
    args: argparse.Namespace,
    mkl: bool = False,
) -> dict:
    """One worker subprocess; ``mkl``: ours with its float32 products left to MKL."""
    cmd = [
        python,
        __file__,
        "--worker",
        impl,
        "--graph",
        str(graph),
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--device",
        args.device,
        "--precision",
        precision,
    ]
    if concat:
        cmd.append("--concat-trick")
    env = {**os.environ, "SIMSURROGATE_ONEDNN": "0" if mkl else "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _key(impl: str, concat: bool, precision: str) -> str:
    """Row name of one configuration, e.g. ``simsurrogate +concat bf16-mixed``."""
    return impl + (" +concat" if concat else "") + ("" if precision == "32" else f" {precision}")


def _ratio(
    rows: dict[str, dict], anchor: tuple[str, bool], ours: tuple[str, bool], precision: str
) -> float:
    """Time per step of ``anchor`` over that of ``ours`` (> 1: ours is faster)."""
    return rows[_key(*anchor, precision)]["s_per_step"] / rows[_key(*ours, precision)]["s_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=["simsurrogate", "physicsnemo"], help=argparse.SUPPRESS)
    parser.add_argument("--graph", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--concat-trick", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="32", help=argparse.SUPPRESS)
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also time both libraries under bf16 autocast (mixed precision: float32 "
        "weights and optimizer, matrix products in bfloat16)",
    )
    parser.add_argument("--anchor-python", default=str(ROOT / "out/venvs/physicsnemo/bin/python"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--build-anchor", action="store_true", help="create the PhysicsNeMo venv")
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.build_anchor:
        _build_anchor(Path(args.anchor_python).parents[1])
        return
    if not Path(args.anchor_python).exists():
        sys.exit(f"no PhysicsNeMo venv at {args.anchor_python}; see this script's docstring")
    graph = ROOT / "out" / "bench_mgn_graph.npz"
    graph.parent.mkdir(parents=True, exist_ok=True)
    _mesh(graph)
    configs = [
        ("simsurrogate", True, sys.executable),  # our default: concat trick on
        ("physicsnemo", False, args.anchor_python),  # their default: off
        ("simsurrogate", False, sys.executable),
        ("physicsnemo", True, args.anchor_python),
    ]
    precisions = ["32", "bf16-mixed"] if args.bf16 else ["32"]
    runs: dict[str, list[dict]] = {}
    for rep in range(args.repeats):
        for (impl, concat, python), precision in itertools.product(configs, precisions):
            key = _key(impl, concat, precision)
            runs.setdefault(key, []).append(_run(python, impl, concat, precision, graph, args))
            print(f"rep {rep}: {key}: {runs[key][-1]['median_s']:.3f} s/step", flush=True)
        if args.device == "cpu":  # what the oneDNN products bring: ours on MKL, as torch does
            key = "simsurrogate +concat (MKL products)"
            runs.setdefault(key, []).append(
                _run(sys.executable, "simsurrogate", True, "32", graph, args, mkl=True)
            )
            print(f"rep {rep}: {key}: {runs[key][-1]['median_s']:.3f} s/step", flush=True)
    rows = {}
    for key, results in runs.items():
        rows[key] = {
            "s_per_step": statistics.median(r["median_s"] for r in results),
            "graphs_per_s": 1.0 / statistics.median(r["median_s"] for r in results),
            "peak_mib": max(r["peak_mib"] for r in results),
            "params": results[0]["params"],
        }
    speedups = {
        precision: {
            "default_vs_default": _ratio(
                rows, ("physicsnemo", False), ("simsurrogate", True), precision
            ),
            "concat_vs_concat": _ratio(
                rows, ("physicsnemo", True), ("simsurrogate", True), precision
            ),
            "plain_vs_plain": _ratio(
                rows, ("physicsnemo", False), ("simsurrogate", False), precision
            ),
        }
        for precision in precisions
    }
    report = {
        "benchmark": "MeshGraphNet training step (forward, backward, Adam), one graph",
        "graph": {k: runs["physicsnemo"][0][k] for k in ("nodes", "edges")},
        "device": args.device,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "results": rows,
        "speedups": speedups,
        "command": "python " + " ".join(sys.argv),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mgn_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| implementation | concat trick | precision | parameters | s / step | graphs / s "
        "| peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        impl = key.split()[0] + (", products on MKL" if "MKL" in key else "")
        precision = "bf16-mixed" if key.endswith("bf16-mixed") else "32"
        lines.append(
            f"| {impl} | {'yes' if '+concat' in key else 'no'} | {precision} | {r['params']:,} | "
            f"{r['s_per_step']:.3f} | {r['graphs_per_s']:.2f} | {r['peak_mib']:.0f} |"
        )
    g = report["graph"]
    lines.append("")
    for precision, sp in speedups.items():
        lines.append(
            f"Speed-up at precision {precision}, each library's default (ours: concat trick on; "
            f"PhysicsNeMo: off): **{sp['default_vs_default']:.2f}x**; both with the concat "
            f"trick: {sp['concat_vs_concat']:.2f}x; both without: {sp['plain_vs_plain']:.2f}x."
        )
    mkl = rows.get("simsurrogate +concat (MKL products)")
    if mkl is not None:
        gain = mkl["s_per_step"] / rows[_key("simsurrogate", True, "32")]["s_per_step"]
        report["onednn_gain"] = gain
        (RESULTS / "mgn_speed.json").write_text(json.dumps(report, indent=2) + "\n")
        lines.append(
            f"Our float32 products through oneDNN instead of MKL (`simsurrogate.models.linear`): "
            f"{gain:.2f}x; with MKL, as torch.nn.Linear runs them, default against default: "
            f"{rows[_key('physicsnemo', False, '32')]['s_per_step'] / mkl['s_per_step']:.2f}x."
        )
    lines += [
        "",
        f"One training step on a {g['nodes']}-node / {g['edges']}-edge cylinder-flow mesh, "
        f"{args.device}, {args.threads} threads, median of {args.repeats} interleaved "
        f"subprocess runs of {args.steps} steps each. Peak memory is the worker process's "
        "maximum resident set (CPU) or torch's peak allocation (CUDA). bf16-mixed: the forward "
        "pass under `torch.autocast(dtype=torch.bfloat16)`, weights, gradients and Adam in "
        "float32 (Lightning's `precision: bf16-mixed`).",
        "",
        f"`{report['command']}` on {report['machine']}.",
    ]
    (RESULTS / "mgn_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
