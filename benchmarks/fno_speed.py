"""FNO training speed against the anchor, neuraloperator 2.0.0, on identical configurations.

Builds (if missing) a separate virtual environment for the anchor at ``out/venvs/neuralop``
(torch 2.13.0 first, then ``neuraloperator==2.0.0`` under ``-c constraints.txt``; torchvision
is refused), then on the same machine, in the same run, measures for each configuration the
training throughput (forward + backward + Adam step, samples/s) and the peak memory of
simsurrogate's FNO and of neuraloperator's FNO. Every measurement is its own subprocess with
the same thread count; the two libraries alternate (A, B, B, A, ...) over several
repetitions and the medians are reported. Results go to ``benchmarks/results/fno_speed.json``
and ``fno_speed.md``.

Matching the two models. neuraloperator's ``n_modes=(k1, k2)`` keeps k1 frequencies on the
first dim (-k1/2 .. k1/2 - 1) and k2//2 + 1 on the last (rfft) dim; simsurrogate's
``modes=[m1, m2]`` keeps 0..m1-1 and -m1..-1 on the first dim and 0..m2-1 on the last, so
``n_modes=(24, 24)`` is ``modes=[12, 13]``. Both: width 32, 4 Fourier layers, lifting and
projection MLPs with 128 hidden channels, GELU, grid coordinates j/n as two extra input
channels, a linear (1x1) skip per layer, no channel MLP inside the blocks (neuraloperator's
``use_channel_mlp=False``), no normalisation layers. neuraloperator pads ``round(f n)``
points at both ends of each dim, simsurrogate twice that at the end: the padded grids are
equal and, the layers being shift-equivariant on the periodic padded grid, so are the
functions. The script checks this: simsurrogate's weights are copied into neuraloperator's
model and both outputs compared on the same input (``equivalence_max_rel_diff``), and the
parameter counts (real numbers, a complex weight counting twice) are compared.

One difference remains in neuraloperator 2.0.0 itself: with ``use_channel_mlp=False`` its
``FNOBlocks`` applies the activation twice in every block but the last (``gelu(gelu(v))``;
the second call is meant to follow the channel MLP that is switched off). So it is timed two
ways: as shipped (``neuralop``) and with that second call made the only one
(``neuralop_1act``, the block's ``non_linearity`` replaced by a callable that is the identity
on odd calls and GELU on even ones), which computes exactly simsurrogate's function: the
equivalence check uses this variant and also reports the as-shipped difference.

    python benchmarks/fno_speed.py                       # CPU, 2 threads, 5 repetitions
    python benchmarks/fno_speed.py --device cuda --reps 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anchor_venv import anchor_python

ROOT = Path(__file__).resolve().parents[1]
NEURALOP_VERSION = "2.0.0"
IMPLS = ("simsurrogate", "neuralop", "neuralop_1act")

#: name -> (grid points per dim, neuraloperator n_modes per dim)
CONFIGS = {
    "s85_nmodes24": (85, 24),
    "s85_nmodes12": (85, 12),
    "s128_nmodes24": (128, 24),
    "s128_nmodes12": (128, 12),
}
WIDTH, LAYERS, HIDDEN, BATCH = 32, 4, 128, 20
PAD_FRACTION = 0.05  # neuraloperator's domain_padding; simsurrogate pads 2 * round(f n) at the end


def our_modes(n_modes: int) -> list[int]:
    """simsurrogate ``modes`` keeping the same frequencies as neuraloperator's (n, n)."""
    return [n_modes // 2, n_modes // 2 + 1]


def pad_points(s: int) -> int:
    """neuraloperator's padding per side, ``round(f s)`` (Python rounding, as it does)."""
    return round(PAD_FRACTION * s)


# ---------------------------------------------------------------------------- worker side


def build(impl: str, config: str, transform: str = "auto"):
    """The model of ``impl`` for ``config`` (imports only that library)."""
    s, n_modes = CONFIGS[config]
    if impl == "simsurrogate":
        from simsurrogate.models.operators import FNO, SpectralConv

        SpectralConv.transform = transform
        return FNO(
            1,
            1,
            our_modes(n_modes),
            width=WIDTH,
            n_layers=LAYERS,
            padding=2 * pad_points(s),
            lifting_channels=HIDDEN,
            projection_channels=HIDDEN,
            positional_embedding=True,
        )
    from neuralop.models import FNO

    model = FNO(
        n_modes=(n_modes, n_modes),
        in_channels=1,
        out_channels=1,
        hidden_channels=WIDTH,
        n_layers=LAYERS,
        lifting_channel_ratio=HIDDEN / WIDTH,
        projection_channel_ratio=HIDDEN / WIDTH,
        positional_embedding="grid",
        use_channel_mlp=False,
        fno_skip="linear",
        domain_padding=pad_points(s) / s,
        norm=None,
    )
    if impl == "neuralop_1act":
        model.fno_blocks.non_linearity = SecondCallGelu()
    return model


class SecondCallGelu:
    """GELU on every second call, identity otherwise: one activation per neuraloperator block.

    neuraloperator 2.0.0's ``FNOBlocks`` (post-activation, no channel MLP) calls its
    ``non_linearity`` twice in each block but the last, and never in the last, so within any
    forward pass the calls come in pairs and this applies GELU once per block.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x):
        import torch.nn.functional as F

        self.calls += 1
        return F.gelu(x) if self.calls % 2 == 0 else x


def n_real_params(model) -> int:
    """Parameter count in real numbers (a complex entry counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def worker_time(args: argparse.Namespace) -> dict:
    """Time ``args.steps`` training steps after ``args.warmup``; peak memory of the steps."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(args.impl, args.config, args.transform).to(device)
    s = CONFIGS[args.config][0]
    x = torch.randn(BATCH, 1, s, s, device=device)
    y = torch.randn(BATCH, 1, s, s, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        base = max(base, _rss_kib())
    times = []
    for i in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
        kind = "torch.cuda.max_memory_allocated above the model and data"
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        kind = "peak RSS growth over the training steps (ru_maxrss)"
    step_s = statistics.median(times)
    return {
        "step_times_s": times,
        "median_step_s": step_s,
        "samples_per_s": BATCH / step_s,
        "peak_memory_mib": peak_mib,
        "memory_measure": kind,
        "n_params": n_real_params(model),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _roll_modes(weight, n_modes: int):
    """simsurrogate's first-dim mode order (0..m-1, -m..-1) -> fftshift order (-m..m-1)."""
    import torch

    return torch.roll(weight, n_modes // 2, dims=2)


def worker_export(args: argparse.Namespace) -> dict:
    """simsurrogate: save weights, an input and the output, for the equivalence check."""
    import torch

    torch.manual_seed(1)
    model = build("simsurrogate", args.config, args.transform)
    s = args.check_grid or CONFIGS[args.config][0]
    x = torch.randn(2, 1, s, s)
    with torch.no_grad():
        y = model(x)
    torch.save({"state": model.state_dict(), "x": x, "y": y}, args.exchange)
    return {"n_params": n_real_params(model)}


def worker_compare(args: argparse.Namespace) -> dict:
    """neuraloperator: load simsurrogate's weights, run the same input, compare outputs."""
    import torch

    data = torch.load(args.exchange, weights_only=True)
    result = {}
    for impl, key in (("neuralop_1act", "equivalence_max_rel_diff"), ("neuralop", "as_shipped")):
        model = _with_our_weights(build(impl, args.config), data["state"], args.config)
        with torch.no_grad():
            y = model(data["x"])
        result[key] = float((y - data["y"]).abs().max() / data["y"].abs().max())
    return {
        "equivalence_max_rel_diff": result["equivalence_max_rel_diff"],
        "as_shipped_max_rel_diff": result["as_shipped"],
        "n_params": n_real_params(model),
    }


def _with_our_weights(model, ours: dict, config: str):
    """neuraloperator's ``model`` holding simsurrogate's weights ``ours`` (a state dict)."""
    import torch

    n_modes = CONFIGS[config][1]
    theirs = model.state_dict()
    mapped = {}
    for key, value in theirs.items():
        if not torch.is_tensor(value):
            continue
        parts = key.split(".")
        if parts[0] in ("lifting", "projection"):  # fcs.k <-> Sequential index 2k
            src = f"{parts[0]}.{2 * int(parts[2])}.{parts[3]}"
            new = ours[src].reshape(value.shape)
        elif parts[:2] == ["fno_blocks", "convs"] and parts[3] == "weight":
            w = torch.view_as_complex(ours[f"spectral.{parts[2]}.weight"].contiguous())
            new = _roll_modes(w, n_modes)
        elif parts[:2] == ["fno_blocks", "convs"] and parts[3] == "bias":
            new = ours[f"skips.{parts[2]}.0.bias"].reshape(value.shape)
        elif parts[:2] == ["fno_blocks", "fno_skips"]:
            new = ours[f"skips.{parts[2]}.0.weight"].reshape(value.shape)
        else:
            raise KeyError(f"no simsurrogate weight for neuraloperator's {key}")
        mapped[key] = new.to(value.dtype)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise KeyError(f"weights left unmapped: {missing} {unexpected}")
    return model


# ---------------------------------------------------------------------------- driver side


def neuralop_python(venv: Path) -> Path:
    """The anchor venv's python, creating the venv first if it is missing or incomplete."""
    return anchor_python(venv, [f"neuraloperator=={NEURALOP_VERSION}"], "import neuralop, torch")


def run_worker(python: Path, mode: str, extra: list[str], threads: int) -> dict:
    """Run this file in worker ``mode`` under ``python``; return its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [str(python), __file__, "--worker", mode, "--result", out.name, *extra]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"worker failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        return json.loads(Path(out.name).read_text())


def versions(python: Path) -> dict:
    code = (
        "import importlib.metadata as m, platform, torch; "
        "print(platform.python_version(), torch.__version__, m.version('neuraloperator'), "
        "m.version('tensorly'), m.version('tensorly-torch'))"
    )
    py, torch_v, nop, tl, tlt = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    import torch

    import simsurrogate

    return {
        "simsurrogate": simsurrogate.__version__,
        "simsurrogate_torch": torch.__version__,
        "simsurrogate_python": platform.python_version(),
        "neuraloperator": nop,
        "neuraloperator_torch": torch_v,
        "neuraloperator_python": py,
        "tensorly": tl,
        "tensorly_torch": tlt,
    }


def machine(device: str) -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{model}, {os.cpu_count()} logical cores"
    if device == "cuda":
        import torch

        text += f", {torch.cuda.get_device_name()}"
    return text


def table(result: dict) -> list[str]:
    lines = [
        "| config | grid (padded) | n_modes (neuraloperator) / modes (simsurrogate) "
        "| parameters | samples/s: simsurrogate / neuraloperator / neuraloperator 1 act. "
        "| speed ratio vs neuraloperator (as shipped / 1 act.) "
        "| peak memory MiB: ours / theirs / theirs 1 act. | outputs max rel. diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["configs"].items():
        runs = [row[impl] for impl in IMPLS]
        counts = {r["n_params"] for r in runs}
        params = f"{runs[0]['n_params']:,}" + ("" if len(counts) == 1 else " (differ!)")
        lines.append(
            f"| {name} | {row['grid']}² ({row['padded_grid']}²) | {row['neuralop_n_modes']} / "
            f"{row['simsurrogate_modes']} | {params} | "
            + " / ".join(f"{r['median_samples_per_s']:.2f}" for r in runs)
            + f" | **{row['speed_ratio']:.2f}×** / **{row['speed_ratio_1act']:.2f}×** | "
            + " / ".join(f"{r['median_peak_memory_mib']:.0f}" for r in runs)
            + f" | {row['equivalence_max_rel_diff']:.1e} at {row['equivalence_grid']}²"
            + (
                f" ({row['odd_grid_max_rel_diff']:.2f} at {row['grid']}²)"
                if row["odd_grid_max_rel_diff"] is not None
                else ""
            )
            + " |"
        )
    s = result["settings"]
    lines += [
        "",
        f"Training step = forward + backward + Adam step, batch {s['batch']}, MSE loss, "
        f"width {s['width']}, {s['layers']} Fourier layers, lifting/projection MLPs with "
        f"{s['hidden']} hidden channels, grid embedding, padding {s['pad_fraction']} of the "
        "grid per side (neuraloperator) = twice that at the end (simsurrogate), no channel "
        f"MLP. Device {s['device']}, {s['threads']} threads per process, {s['reps']} "
        "interleaved repetitions per library and config, each a fresh process "
        f"({s['warmup']} warm-up + {s['steps']} timed steps; its median step time); the table "
        "gives medians over repetitions. Speed ratio = simsurrogate samples/s over "
        "neuraloperator's; target >= 1.2. The paired ratio (within each repetition, then the "
        "median) is in the JSON (`paired_ratio_median`). Memory: "
        f"{result['memory_measure']}.",
        "",
        "neuraloperator 2.0.0 applies its activation twice in each block but the last when the "
        "channel MLP is off (`gelu(gelu(v))`); '1 act.' is neuraloperator with the first of "
        "those calls made the identity, which computes exactly simsurrogate's function: the "
        "outputs column compares it with simsurrogate holding the same weights (as shipped, "
        "the outputs differ by "
        + ", ".join(f"{row['as_shipped_max_rel_diff']:.2f}" for row in result["configs"].values())
        + "). On odd padded sizes (85 + 2 x 4 = 93) neuraloperator 2.0.0 also misplaces every "
        "kept mode by one frequency on the way back (it undoes `fftshift` with `fftshift`, not "
        "`ifftshift`; fixed upstream after 2.0.0 in neuraloperator pull request #688), so "
        "there it computes a different function at the same cost; equality is shown on the "
        "next even size (86 + 2 x 4 = 94) and the odd-size difference is given in brackets.",
        "",
        f"Spectral transform used by simsurrogate: `{s['transform']}` (see "
        "`simsurrogate/models/operators/fno.py`). Versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        + ".",
        "",
        f"Machine: {result['machine']}; other work was running on it (1-minute load average "
        f"{result['load_average_start'][0]:.1f} at the start, {result['load_average_end'][0]:.1f} "
        "at the end; each run's load and step times are in the JSON). Wall time "
        f"{result['wall_time_s'] / 60:.1f} min.",
        "",
        f"`{result['command']}`",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per process")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--transform",
        choices=["auto", "dft", "fft"],
        default="auto",
        help="simsurrogate SpectralConv.transform",
    )
    parser.add_argument("--venv", type=Path, default=ROOT / "out" / "venvs" / "neuralop")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    # worker mode (internal)
    parser.add_argument("--worker", choices=["time", "export", "compare"], help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--exchange", help=argparse.SUPPRESS)
    parser.add_argument("--check-grid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        fn = {"time": worker_time, "export": worker_export, "compare": worker_compare}
        Path(args.result).write_text(json.dumps(fn[args.worker](args)))
        return

    start = time.time()
    load_start = os.getloadavg()
    pythons = {"simsurrogate": Path(sys.executable), "neuralop": neuralop_python(args.venv)}
    result: dict = {
        "benchmark": f"FNO training throughput, simsurrogate vs neuraloperator {NEURALOP_VERSION}",
        "command": " ".join(["python", "benchmarks/fno_speed.py", *sys.argv[1:]]),
        "machine": machine(args.device),
        "versions": versions(pythons["neuralop"]),
        "settings": {
            "device": args.device,
            "threads": args.threads,
            "reps": args.reps,
            "steps": args.steps,
            "warmup": args.warmup,
            "batch": BATCH,
            "width": WIDTH,
            "layers": LAYERS,
            "hidden": HIDDEN,
            "pad_fraction": PAD_FRACTION,
            "transform": args.transform,
            "loss": "mse",
            "optimizer": "Adam(lr=1e-3, weight_decay=1e-4)",
        },
        "configs": {},
    }
    common = ["--device", args.device, "--threads", str(args.threads)]
    common += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    common += ["--transform", args.transform]
    runs: dict[str, dict[str, list[dict]]] = {c: {i: [] for i in IMPLS} for c in args.configs}
    for name in args.configs:  # equivalence check first: both compute the same function
        s, n_modes = CONFIGS[name]
        row = result["configs"][name] = {
            "grid": s,
            "padded_grid": s + 2 * pad_points(s),
            "neuralop_n_modes": [n_modes, n_modes],
            "simsurrogate_modes": our_modes(n_modes),
            "simsurrogate_padding_end": 2 * pad_points(s),
            "neuralop_domain_padding": pad_points(s) / s,
        }
        # neuraloperator 2.0.0 undoes its fftshift with fftshift: on an odd padded size that
        # moves every kept mode by one frequency, so equality is checked on s + 1 as well
        grids = [s] if (s + 2 * pad_points(s)) % 2 == 0 else [s, s + 1]
        for grid in grids:
            with tempfile.TemporaryDirectory() as tmp:
                exchange = ["--config", name, "--exchange", str(Path(tmp) / "x.pt")]
                exchange += ["--check-grid", str(grid)]
                ours = run_worker(pythons["simsurrogate"], "export", exchange + common, 1)
                theirs = run_worker(pythons["neuralop"], "compare", exchange + common, 1)
            row["n_params_match"] = ours["n_params"] == theirs["n_params"]
            row.setdefault("equivalence", {})[str(grid)] = {
                "padded_grid": grid + 2 * pad_points(s),
                "max_rel_diff_1act": theirs["equivalence_max_rel_diff"],
                "max_rel_diff_as_shipped": theirs["as_shipped_max_rel_diff"],
            }
            print(
                f"{name} at {grid}²: outputs differ by {theirs['equivalence_max_rel_diff']:.1e} "
                f"(relative; {theirs['as_shipped_max_rel_diff']:.2f} as shipped), "
                f"parameters {ours['n_params']} / {theirs['n_params']}",
                flush=True,
            )
        last = row["equivalence"][str(grids[-1])]
        row["equivalence_grid"] = grids[-1]
        row["equivalence_max_rel_diff"] = last["max_rel_diff_1act"]
        row["as_shipped_max_rel_diff"] = last["max_rel_diff_as_shipped"]
        row["odd_grid_max_rel_diff"] = (
            row["equivalence"][str(s)]["max_rel_diff_1act"] if len(grids) > 1 else None
        )
    for rep in range(args.reps):
        for name in args.configs:
            shift = rep % len(IMPLS)  # rotate who goes first
            for impl in IMPLS[shift:] + IMPLS[:shift]:
                extra = ["--impl", impl, "--config", name, *common]
                load = os.getloadavg()[0]
                python = pythons["simsurrogate" if impl == "simsurrogate" else "neuralop"]
                run = run_worker(python, "time", extra, args.threads)
                run["load_average_1min"] = load
                runs[name][impl].append(run)
                print(
                    f"rep {rep + 1}/{args.reps} {name} {impl}: "
                    f"{run['samples_per_s']:.2f} samples/s, {run['peak_memory_mib']:.0f} MiB "
                    f"(load {load:.1f})",
                    flush=True,
                )
    for name in args.configs:
        row = result["configs"][name]
        for impl in IMPLS:
            rs = runs[name][impl]
            row[impl] = {
                "median_samples_per_s": statistics.median(r["samples_per_s"] for r in rs),
                "median_step_s": statistics.median(r["median_step_s"] for r in rs),
                "median_peak_memory_mib": statistics.median(r["peak_memory_mib"] for r in rs),
                "n_params": rs[0]["n_params"],
                "runs": rs,
            }
        ours = row["simsurrogate"]["median_samples_per_s"]
        row["speed_ratio"] = ours / row["neuralop"]["median_samples_per_s"]
        row["speed_ratio_1act"] = ours / row["neuralop_1act"]["median_samples_per_s"]
        # ratio within each repetition (close in time, similar load), then its median
        for impl, key in (("neuralop", "paired_ratio_median"), ("neuralop_1act", "paired_1act")):
            row[key] = statistics.median(
                a["samples_per_s"] / b["samples_per_s"]
                for a, b in zip(runs[name]["simsurrogate"], runs[name][impl], strict=True)
            )
    first = runs[args.configs[0]]["simsurrogate"][0]
    result["memory_measure"] = first["memory_measure"]
    result["load_average_start"] = load_start
    result["load_average_end"] = os.getloadavg()
    result["wall_time_s"] = round(time.time() - start, 1)
    args.results.mkdir(parents=True, exist_ok=True)
    lines = table(result)
    (args.results / "fno_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "fno_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
