"""Fine-tuning against training from scratch: force error on a new target vs training-set size.

Target: EMT Langevin-MD snapshots of Cu/Ag/Au far hotter and more strained than the pretraining
set of ``checkpoints/emt_painn`` (made with ``simsurrogate data generate emt-metals --out
data/emt_hot --kinds md --temperature-range 2000 3000 --strain 0.06 --elements Cu,Ag,Au
--n-train 500 --n-valid 50 --n-test 100 --seed 7``). For each N in ``--sizes`` (the first N
target training frames) every variant trains for the same number of optimizer steps
(``--steps``, batches of 8, constant learning rate, weight EMA 0.99, loss = energy per atom MSE
+ 10 x force MSE + 100 x stress MSE):

* ``scratch``: the pretrained model's PaiNN architecture with fresh weights, reference energies
  fitted and output scale set from the N frames (lr 2e-3);
* ``finetune``: all weights of the pretrained checkpoint, reference energies refit, no replay
  (lr 2e-4 embedding and interactions, 2e-3 readout, as ``recipes/potentials/
  finetune_emt_painn.yaml``);
* ``replay``: as ``finetune``, with 20 % of each epoch's frames drawn from the pretraining
  training set (a pool of 500 picked by farthest-point sampling);
* ``lora``: low-rank adapters (rank 8, alpha 16, lr 2e-3) on the pretrained linear layers, no
  replay (optional, ``--variants``);
* ``chgnet``: the CHGNet 0.3.0 foundation model bundled in the ``chgnet`` package (trained on
  DFT data of the Materials Project, never on EMT), fine-tuned like ``finetune`` (all weights,
  reference energies refit, the same learning rates, no replay; optional, ``--variants``).
  Its starting checkpoint (all seven elements) is written to ``out/bench_finetune/`` by
  ``checkpoint.save_model``. About 4 s per step on one thread, so it usually runs one seed.

Each run is evaluated (EMA weights) on the target test split and on the pretraining test split
``data/emt_metals/test.h5`` (forgetting; for CHGNet only a reference, since EMT is not its
pretraining data); the pretrained checkpoints themselves are the N = 0 lines.
Training goes through ``lightning.Trainer`` + ``PotentialTask`` + ``AtomsDataModule`` on one
thread, no validation, logger or checkpoints. Finished runs are cached as JSON under
``out/bench_finetune/`` and skipped when run again, so runs can be split over processes
(e.g. ``taskset -c 0 ... --variants scratch`` beside ``taskset -c 1 ... --variants finetune``)::

    OMP_NUM_THREADS=1 python benchmarks/finetune_curves.py --steps 250 \
        --variants scratch finetune replay lora --seeds 0 1

writes ``benchmarks/results/finetune_curves.json``, ``.md`` and ``.png`` from the cached runs
of the given steps, sizes, variants and seeds (``--report-only``: only that, skipping runs
not in the cache; e.g. CHGNet with seed 0 only, then the report over all variants)::

    OMP_NUM_THREADS=1 python benchmarks/finetune_curves.py --steps 250 --variants chgnet
    python benchmarks/finetune_curves.py --steps 250 --report-only \
        --variants scratch finetune replay lora chgnet --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

import simsurrogate.models  # noqa: F401  (before checkpoint: that import order is circular)
from simsurrogate.checkpoint import read_checkpoint, save_model
from simsurrogate.data.atoms import AtomsDataModule
from simsurrogate.models import PaiNN
from simsurrogate.models.potentials.external import CHGNetPotential
from simsurrogate.tasks.finetune import FineTune
from simsurrogate.tasks.potential import PotentialTask

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "out" / "bench_finetune"
CKPT = ROOT / "checkpoints" / "emt_painn" / "model.ckpt"
TARGET = ROOT / "data" / "emt_hot"
OLD_TEST = ROOT / "data" / "emt_metals" / "test.h5"
OLD_TRAIN = ROOT / "data" / "emt_metals" / "train.h5"
CHGNET_CKPT = CACHE / "chgnet_start.ckpt"
ELEMENTS = [13, 28, 29, 46, 47, 78, 79]  # Al Ni Cu Pd Ag Pt Au: the pretraining set's
BATCH = 8
LOSS = {"energy_weight": 1.0, "force_weight": 10.0, "stress_weight": 100.0}
FT_LR = {"embedding": 2e-4, "interactions": 2e-4, "readout": 2e-3}
VARIANTS = {
    "scratch": "from scratch",
    "finetune": "fine-tune, no replay",
    "replay": "fine-tune + 20 % replay (FPS)",
    "lora": "LoRA r=8, no replay",
    "chgnet": "CHGNet 0.3.0 fine-tuned",
}
# the N = 0 line of each starting checkpoint: (name in the cache, variant it evaluates as)
BASELINES = {"pretrained": "finetune", "chgnet_pretrained": "chgnet"}


def _chgnet_start() -> Path:
    """The bundled CHGNet 0.3.0 restricted to the seven elements, as a starting checkpoint."""
    if not CHGNET_CKPT.exists():
        save_model(CHGNetPotential(ELEMENTS), CHGNET_CKPT, task="potential")
    return CHGNET_CKPT


def _task(variant: str) -> PotentialTask:
    """The task of one variant (fresh weights drawn from the current seed for ``scratch``)."""
    common = {"lr": 2e-3, "lr_schedule": "constant", "ema_decay": 0.99, **LOSS}
    if variant == "scratch":
        spec = read_checkpoint(CKPT)["simsurrogate"]["model"]
        return PotentialTask(PaiNN(**spec["args"]), **common)
    if variant == "lora":
        ft = FineTune(
            checkpoint=str(CKPT), trainable="lora", lora_rank=8, lora_alpha=16.0,
            lr={"adapters": 2e-3},
        )  # fmt: skip
    else:
        start = _chgnet_start() if variant == "chgnet" else CKPT
        ft = FineTune(checkpoint=str(start), trainable="all", lr=FT_LR)
    return PotentialTask(finetune=ft, **common)


def _data(n: int, replay: bool, test: Path) -> AtomsDataModule:
    """Target training frames 0..n-1 (with replay of the pretraining set if asked) and one
    test file."""
    kw: dict[str, Any] = {}
    if replay:
        kw = {
            "replay": str(OLD_TRAIN),
            "replay_fraction": 0.2,
            "replay_selection": "fps",
            "replay_pool": 500,
        }
    return AtomsDataModule(
        str(TARGET / "train.h5"),
        str(TARGET / "valid.h5"),
        test=str(test),
        batch_size=BATCH,
        max_train=n,
        **kw,
    )


def _trainer(steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        inference_mode=False,
        default_root_dir=CACHE / "lightning",
    )


def _test(trainer: L.Trainer, task: PotentialTask, n: int, replay: bool) -> dict[str, dict]:
    """Metrics on the target and the pretraining test splits: force MAE (meV/Å), energy MAE
    (meV/atom), stress MAE (meV/Å³)."""
    out = {}
    for name, path in (("target", TARGET / "test.h5"), ("old", OLD_TEST)):
        (m,) = trainer.test(task, datamodule=_data(n, replay, path), verbose=False)
        out[name] = {
            "force_mae": 1e3 * m["test/force_mae"],
            "force_rmse": 1e3 * m["test/force_rmse"],
            "energy_mae_per_atom": 1e3 * m["test/energy_mae_per_atom"],
            "stress_mae": 1e3 * m["test/stress_mae"],
        }
    return out


def run(variant: str, n: int, steps: int, seed: int) -> dict:
    """Train one variant on n target frames for ``steps`` steps (n = 0: the pretrained model
    as is) and test it."""
    L.seed_everything(seed, verbose=False)
    replay = variant == "replay"
    task = _task(variant)
    trainer = _trainer(steps)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n > 0:
            trainer.fit(task, datamodule=_data(n, replay, TARGET / "test.h5"))
        train_s = time.perf_counter() - t0
        metrics = _test(trainer, task, max(n, 1), replay)
    per_epoch = n + (max(1, round(0.2 * n / 0.8)) if replay else 0)  # as AtomsDataModule
    return {
        "variant": variant,
        "n_train": n,
        "steps": steps if n > 0 else 0,
        "seed": seed,
        "epochs": steps / math.ceil(per_epoch / BATCH) if n > 0 else 0.0,
        "train_seconds": train_s,
        **metrics,
    }


def _cache(variant: str, n: int, steps: int, seed: int) -> Path:
    return CACHE / f"{variant}_n{n}_steps{steps}_seed{seed}.json"


def _summary(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (variant, N): mean, min and max over seeds of every metric on both test sets."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["n_train"]), []).append(r)
    out = {}
    for key, runs in groups.items():
        out[key] = {"seeds": sorted(r["seed"] for r in runs)}
        for split in ("target", "old"):
            out[key][split] = {}
            for metric in runs[0][split]:
                values = [r[split][metric] for r in runs]
                out[key][split][metric] = {
                    "mean": sum(values) / len(values),
                    "min": min(values),
                    "max": max(values),
                }
    return out


def _cell(entry: dict | None, split: str, metric: str) -> str:
    if entry is None:
        return " — |"
    m = entry[split][metric]
    spread = f" ({m['min']:.1f}–{m['max']:.1f})" if len(entry["seeds"]) > 1 else ""
    return f" {m['mean']:.1f}{spread} |"


def _table(summary: dict, variants: list[str], sizes: list[int], metric: str) -> list[str]:
    """Markdown rows N, columns (target, old) per variant."""
    head = "| N |" + "".join(f" {VARIANTS[v]}: target | old |" for v in variants)
    lines = [head, "|---:|" + "---:|---:|" * len(variants)]
    for n in sizes:
        cells = "".join(
            _cell(summary.get((v, n)), "target", metric) + _cell(summary.get((v, n)), "old", metric)
            for v in variants
        )
        lines.append(f"| {n} |" + cells)
    return lines


def _seeds_run(rows: list[dict], variant: str) -> str:
    """The seeds a variant ran with, as text ("0, 1")."""
    return ", ".join(str(s) for s in sorted({r["seed"] for r in rows if r["variant"] == variant}))


def report(rows: list[dict], steps: int, sizes: list[int], seeds: list[int], command: str) -> None:
    """Write the JSON (every run and the summary over seeds), the markdown tables and the
    plot."""
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    summary = _summary(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": command,
        "steps": steps,
        "batch_size": BATCH,
        "seeds": seeds,
        "threads": 1,
        "target": str(TARGET.relative_to(ROOT)),
        "old_test": str(OLD_TEST.relative_to(ROOT)),
        "checkpoint": str(CKPT.relative_to(ROOT)),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
    }
    table = [{"variant": v, "n_train": n, **entry} for (v, n), entry in sorted(summary.items())]
    (RESULTS / "finetune_curves.json").write_text(
        json.dumps({"meta": meta, "summary": table, "runs": rows}, indent=1) + "\n"
    )
    epoch_text = ", ".join(f"N={n}: {steps / math.ceil(n / BATCH):.0f}" for n in sizes)
    seed_text = (
        f"mean over seeds {seeds} where run (min–max in brackets when more than one ran)"
        if len(seeds) > 1
        else f"seed {seeds[0]}"
    )
    baseline = " ".join(
        f"{title} as is (N = 0, its own reference energies): force MAE "
        f"{pre['target']['force_mae']['mean']:.1f} meV/Å on the target, "
        f"{pre['old']['force_mae']['mean']:.1f} meV/Å on the pretraining test; energy MAE "
        f"{pre['target']['energy_mae_per_atom']['mean']:.1f} and "
        f"{pre['old']['energy_mae_per_atom']['mean']:.1f} meV/atom."
        for name, title in (("pretrained", "The pretrained model"), ("chgnet_pretrained", "CHGNet"))
        if (pre := summary.get((name, 0))) is not None
    )
    md = [
        "# Fine-tuning vs training from scratch (reduced CPU run)",
        "",
        f"`{command}`",
        "",
        f"Reduced CPU run: every model trains for a fixed {steps} optimizer steps (batch "
        f"{BATCH}, one thread per run, constant learning rate, weight EMA 0.99), i.e. epochs "
        f"{epoch_text} (replay epochs hold 25 % more frames, so slightly fewer); {seed_text}. "
        "Far shorter than a real fine-tuning or from-scratch training: read the numbers as a "
        "comparison at equal compute, not as converged accuracy. Seeds run per variant: "
        + "; ".join(f"{VARIANTS[v]} {_seeds_run(rows, v)}" for v in variants)
        + ".",
        "",
        f"Target: `{meta['target']}`, EMT Langevin-MD snapshots of Cu/Ag/Au at 2000–3000 K with"
        " strains up to 6 % (pretraining: up to 1500 K and 3 %), 100 test frames; the first N "
        "of its 500 training frames train. Old data: the pretraining test split "
        f"`{meta['old_test']}` (200 frames, all seven elements): forgetting. The from-scratch "
        "model never sees Al, Ni, Pd or Pt, so its old-data error is a reference, not "
        "forgetting. Pretrained checkpoint: `checkpoints/emt_painn/model.ckpt`."
        + (
            " CHGNet 0.3.0 was pretrained on DFT (Materials Project), not EMT: its old-data "
            "column measures its distance from EMT on elements the target lacks (their "
            "reference energies are not refit), not forgetting."
            if "chgnet" in variants
            else ""
        ),
        "",
        baseline,
        "",
        "## Force MAE (meV/Å): target test | pretraining test",
        "",
        *_table(summary, variants, sizes, "force_mae"),
        "",
        "## Energy MAE (meV/atom): target test | pretraining test",
        "",
        *_table(summary, variants, sizes, "energy_mae_per_atom"),
        "",
        "![force MAE vs N](finetune_curves.png)",
        "",
    ]
    (RESULTS / "finetune_curves.md").write_text("\n".join(md))
    _plot(summary, variants, steps)


def _plot(summary: dict, variants: list[str], steps: int) -> None:
    """Force MAE vs N (log-log, mean over seeds, bars min to max): target and old data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, split, title in (
        (axes[0], "target", "target test (hot, strained Cu/Ag/Au MD)"),
        (axes[1], "old", "pretraining test (forgetting)"),
    ):
        for v in variants:
            ns = sorted(n for (name, n) in summary if name == v)
            m = [summary[(v, n)][split]["force_mae"] for n in ns]
            mean = [x["mean"] for x in m]
            err = [[x["mean"] - x["min"] for x in m], [x["max"] - x["mean"] for x in m]]
            ax.errorbar(ns, mean, yerr=err, fmt="o-", capsize=3, label=VARIANTS[v])
        for name, style, label in (
            ("pretrained", "--", "pretrained, as is"),
            ("chgnet_pretrained", ":", "CHGNet, as is"),
        ):
            if (name, 0) in summary:
                level = summary[(name, 0)][split]["force_mae"]["mean"]
                ax.axhline(level, color="gray", ls=style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("target training structures N")
        ax.set_ylabel("force MAE (meV/Å)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"equal budget: {steps} steps of batch {BATCH} (reduced CPU run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "finetune_curves.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=250, help="optimizer steps per run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100, 500])
    parser.add_argument(
        "--variants", nargs="+", default=["scratch", "finetune", "replay"], choices=list(VARIANTS)
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--report-only", action="store_true", help="only rewrite the results from the cache"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (TARGET / "train.h5").exists():
        sys.exit(f"{TARGET}/train.h5 missing: generate it first (see this script's docstring)")
    baselines = ["pretrained"] + (["chgnet_pretrained"] if "chgnet" in args.variants else [])
    jobs = [(b, 0, 0, 0) for b in baselines]  # no training: one seed is enough
    jobs += [(v, n, args.steps, s) for s in args.seeds for n in args.sizes for v in args.variants]
    for variant, n, steps, seed in [] if args.report_only else jobs:
        path = _cache(variant, n, steps, seed)
        if path.exists():
            continue
        result = run(BASELINES.get(variant, variant), n, steps, seed)
        result["variant"] = variant
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{variant:10s} N={n:4d} seed {seed}: target {result['target']['force_mae']:.1f} "
              f"meV/Å, old {result['old']['force_mae']:.1f} meV/Å, "
              f"{result['train_seconds']:.0f} s", flush=True)  # fmt: skip
    rows = [json.loads(p.read_text()) for b in baselines if (p := _cache(b, 0, 0, 0)).exists()]
    for variant in [v for v in VARIANTS if v in args.variants]:
        for n in args.sizes:
            for seed in args.seeds:
                path = _cache(variant, n, args.steps, seed)
                if path.exists():
                    rows.append(json.loads(path.read_text()))
    command = "OMP_NUM_THREADS=1 python benchmarks/finetune_curves.py " + " ".join(
        [f"--steps {args.steps}", "--sizes", *map(str, args.sizes)]
        + ["--variants", *args.variants, "--seeds", *map(str, args.seeds)]
    )
    report(rows, args.steps, args.sizes, args.seeds, command)


if __name__ == "__main__":
    main()
