"""benchmarks/toy2d.py's bookkeeping (the bar, minutes to the bar, worst seed, the reference row's seeds) and
benchmarks/toy2d_reference.py's refusal of settings it does not implement; no training."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("toy2d")


def _run(bench, row, exp, seed, evals, wall=100.0):
    """A finished run's record as run_one returns it: evals = [(step, modes, hq, seconds from launch)]."""
    rows = [{"step": s, "modes": m, "high_quality": q, "reverse_kl": 0.01} for s, m, q, _ in evals]
    meta = {"wall_s": wall, "eval_wall_s": {str(s): t for s, _, _, t in evals}}
    record = {"row": row, "experiment": exp, "seed": seed, "dir": "x", "command": "c"}
    return bench._result(record, rows, meta, reused=True)


def test_bar_needs_every_mode_and_93_percent(bench):
    assert bench.meets_bar({"modes": 25.0, "high_quality": 0.93}, "grid")
    assert not bench.meets_bar({"modes": 24.0, "high_quality": 0.99}, "grid")
    assert not bench.meets_bar({"modes": 25.0, "high_quality": 0.929}, "grid")
    assert bench.meets_bar({"modes": 8.0, "high_quality": 0.95}, "ring")
    assert not bench.meets_bar({"modes": 8.0, "high_quality": 0.95}, "parabola")  # no modes to count


def test_minutes_to_bar_is_the_first_evaluation_at_the_bar(bench):
    r = _run(bench, bench.BASE_ROW, "grid", 0, [(2000, 25, 0.80, 30.0), (4000, 25, 0.94, 60.0),
                                                (6000, 24, 0.95, 90.0), (8000, 25, 0.96, 120.0)])
    assert (r["bar_step"], r["bar_s"]) == (4000, 60.0)
    assert (r["modes"], r["high_quality"]) == (25, 0.96)  # the final evaluation
    never = _run(bench, bench.BASE_ROW, "grid", 1, [(2000, 24, 0.95, 30.0)])
    assert never["bar_step"] is None and never["bar_s"] is None


def test_table_reports_worst_seed_misses_and_the_time_ratio(bench):
    args = bench.parse_args(["--seeds", "0", "1", "--experiments", "grid", "--reference", "--reference-seeds", "0"])
    assert bench.seeds_of(args, bench.REF_ROW) == [0] and bench.seeds_of(args, bench.BASE_ROW) == [0, 1]
    results = [
        _run(bench, bench.BASE_ROW, "grid", 0, [(2000, 25, 0.95, 60.0)]),
        _run(bench, bench.BASE_ROW, "grid", 1, [(2000, 24, 0.96, 60.0), (4000, 25, 0.94, 120.0)]),
        _run(bench, bench.REF_ROW, "grid", 0, [(2000, 25, 0.90, 100.0), (4000, 25, 0.95, 270.0)]),
    ]
    table = bench.build_table(args, results)
    assert "| gan-cli | grid | 25 / 95.0 | 25 / 94.0 |" in table
    assert "| keras-io-style reference | grid | 25 / 95.0 | – |" in table
    assert "seed 1: 25 / 94.0%" in table  # worst seed: fewest modes, then lowest HQ
    assert "| 2 of 2 | 1.50 (2.00) |" in table  # minutes to the bar: mean (worst)
    assert "grid 4.50x (4.50 / 1.00 min; whole run 1.00x; seeds 0)" in table  # seed 0 only: both rows have it


def test_reference_seeds_must_be_benchmark_seeds(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--seeds", "0", "--reference", "--reference-seeds", "3"])
    assert "--reference-seeds must be among --seeds" in capsys.readouterr().err


def test_reference_refuses_what_it_does_not_implement():
    ref = _load("toy2d_reference")
    assert ref.check(ref.load_config(["experiment=grid"])) is None
    assert ref.check(ref.load_config(["experiment=ring"])) is None
    assert "loss wgan_gp" in ref.check(ref.load_config(["experiment=grid", "loss=wgan_gp"]))
    assert "batch norm" in ref.check(ref.load_config(["experiment=grid", "model.generator.batch_norm=true"]))
    assert "eval_every" in ref.check(ref.load_config(["experiment=grid", "train.eval_every=7000"]))
    assert "spectral norm" in ref.check(ref.load_config(["experiment=ring", "model.discriminator.spectral_norm=true"]))
