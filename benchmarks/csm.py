#!/usr/bin/env python
"""CSM benchmark: simulation speed (samples/s) and WGAN training speed (generator steps/s) on csm.

    python benchmarks/csm.py                       # both parts, 16 and 64 microphones
    python benchmarks/csm.py --sim-samples 10000   # the issue's 10,000-sample generation case
    python benchmarks/csm.py --skip-train

Simulation: ``CsmSimulator(...).simulate()`` (sources, acoular steering vectors, Wishart draw,
canonical eigendecomposition; no file I/O) and ``.write()`` (the same into HDF5, as ``gan data csm``),
best of ``--repeats``. Training: seed 000's WGAN (csm_mlp, RMSProp 5e-5, clip 0.01, n_critic 5,
batch 64) built by ``gan_cli.training.build.build_gan`` from the real composed config, timed with
``Model.fit`` after one warm-up call (graph tracing excluded), median of ``--repeats``. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ARRAYS = {16: "minidsp_uma-16", 64: "tub_vogel64"}


def bench_simulation(mics: int, mode: str, n: int, repeats: int) -> tuple[float, float]:
    """(samples/s in memory, samples/s written to HDF5), best of ``repeats``."""
    from gan_cli.data.csm_sim import CsmSimulator, SimParams

    sim = CsmSimulator(SimParams(array=ARRAYS[mics], mode=mode, num_samples=n, seed=0))
    CsmSimulator(SimParams(array=ARRAYS[mics], mode=mode, num_samples=8, seed=1)).simulate()  # numba JIT warm-up
    best_mem = best_file = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sim.simulate()
        best_mem = min(best_mem, time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            sim.write(Path(tmp) / "b.h5", progress=False)
            best_file = min(best_file, time.perf_counter() - t0)
    return n / best_mem, n / best_file


def bench_training(mics: int, loss: str, rounds: int, repeats: int, extra: list[str]) -> float:
    """Median generator steps/s of ``gan train loss=LOSS dataset=csm`` networks on ``mics`` microphones."""
    from hydra import compose, initialize_config_module

    from gan_cli.config import resolve as config_mod
    from gan_cli.data.build import build_dataset
    from gan_cli.training.build import build_gan

    overrides = [f"loss={loss}", "dataset=csm", "model=csm_mlp", f"dataset.array={ARRAYS[mics]}", "dataset.num_samples=512",
                 "train.batch_size=64", f"train.steps={rounds}", f"train.eval_every={rounds}",
                 f"train.checkpoint_every={rounds}", *extra]
    with initialize_config_module("gan_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    config_mod.validate(cfg)
    data = build_dataset(cfg.dataset)
    cfg = config_mod.resolve(cfg, data)
    gan = build_gan(cfg, data)
    ds = data.tf_dataset(int(cfg.train.batch_size), 0, batches_per_step=int(cfg.train.n_critic))
    spe = gan.steps_per_execution if hasattr(gan, "steps_per_execution") else 1
    gan.fit(ds, epochs=1, steps_per_epoch=max(spe, 10), verbose=0, shuffle=False)  # trace + warm up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gan.fit(ds, epochs=1, steps_per_epoch=rounds, verbose=0, shuffle=False)
        rates.append(rounds / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sim-samples", type=int, default=2000, help="samples per simulation timing (default 2000)")
    p.add_argument("--train-rounds", type=int, default=30, help="generator steps per training timing (default 30)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mics", type=int, nargs="+", default=[16, 64], choices=sorted(ARRAYS))
    p.add_argument("--skip-sim", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--extra", nargs="*", default=[], help="extra overrides for the training case")
    args = p.parse_args(argv)

    import numpy as np  # noqa: F401  (after acoular's import order is settled by gan_cli)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    if not args.skip_sim:
        print(f"\n### Simulation ({args.sim_samples} samples, best of {args.repeats})\n")
        print("| mics | mode | samples/s (memory) | samples/s (to HDF5) | s for 10,000 (HDF5) |")
        print("|---|---|---|---|---|")
        for m in args.mics:
            for mode in ("analytic", "wishart"):
                mem, file = bench_simulation(m, mode, args.sim_samples, args.repeats)
                print(f"| {m} | {mode} | {mem:,.0f} | {file:,.0f} | {10000 / file:.1f} |", flush=True)
    if not args.skip_train:
        from gan_cli.core.tf_import import quiet_tensorflow

        quiet_tensorflow()
        import tensorflow as tf

        device = "GPU " + tf.config.list_physical_devices("GPU")[0].name if tf.config.list_physical_devices("GPU") else "CPU"
        print(f"\n### Training, batch 64, {args.train_rounds} steps, median of {args.repeats} ({device})\n")
        print("| mics | loss | generator steps/s | critic updates/s |")
        print("|---|---|---|---|")
        for m in args.mics:
            for loss in ("wgan", "wgan_gp"):
                rate = bench_training(m, loss, args.train_rounds, args.repeats, args.extra)
                print(f"| {m} | {loss} | {rate:.2f} | {5 * rate:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
