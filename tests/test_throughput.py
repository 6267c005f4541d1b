"""Fast training: the fused training step computes the same updates as the straightforward
keras-io style loop of benchmarks/throughput.py; mixed precision; the benchmark runs."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import conftest
from conftest import TINY, compose

ROOT = Path(__file__).resolve().parent.parent


def _throughput():
    """benchmarks/throughput.py as a module (it is a script, not part of the package)."""
    if "throughput_bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("throughput_bench", ROOT / "benchmarks" / "throughput.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["throughput_bench"] = module
        spec.loader.exec_module(module)
    return sys.modules["throughput_bench"]


class SharedNoise:
    """The GAN's own stateless draws, so the reference consumes exactly the same noise."""

    def __init__(self, gan):
        self.gan = gan

    def latent(self, batch, slot):
        return self.gan.latent(batch, slot)

    def epsilon(self, batch, slot):
        return self.gan._epsilon(batch, slot)


def _networks(cfg, data, model=None):
    from gan_cli.models import get_builder

    model = cfg.model if model is None else model
    return get_builder(model.name)(model, data, int(cfg.latent.dim), False)


# case -> overrides of a small version of the bench experiment (csm: the critic's two convs + pool are the
# fused ConvLeakyMaxPool layer with its sparse backward pass in gan train, plain Keras layers in the reference)
EQUIVALENCE_CASES = {
    "ring": ["experiment=bench_ring", "model.generator.hidden=[32,32]", "model.discriminator.hidden=[32,32]",
             "dataset.num_samples=2000"],
    "csm": ["experiment=bench_csm", "dataset.array=minidsp_uma-16", "dataset.num_samples=64",
            "model.generator.hidden=[32]", "model.discriminator.filters=[8,16]", "model.discriminator.strides=1",
            "latent.dim=8"],
}


@pytest.mark.parametrize("case,loss", [("ring", "wgan"), ("ring", "wgan_gp"), ("csm", "wgan"), ("csm", "wgan_gp")])
def test_fused_step_matches_straightforward_loop(case, loss):
    """Same initial weights, same real batches, same noise: after 4 rounds (2 compiled calls of 2 rounds
    for the fused step, 4 separate steps for the reference) every G and D weight agrees."""
    import keras
    import tensorflow as tf

    from gan_cli import fast
    from gan_cli.training.gan import GAN
    from gan_cli.losses.adversarial import get_loss
    from gan_cli.data.build import build_dataset

    T = _throughput()
    n_critic, batch, rounds = 5, 32, 4
    cfg = compose([*EQUIVALENCE_CASES[case], f"loss={loss}"])
    data = build_dataset(cfg.dataset)
    keras.utils.set_random_seed(0)
    g1, d1 = _networks(cfg, data)
    with fast.switch(False):  # the reference's networks: plain Keras layers (train.fast=false)
        g2, d2 = _networks(cfg, data)
    if case == "csm":  # gan train's critic has the fused layer, the reference the three Keras layers
        assert any(type(layer).__name__ == "ConvLeakyMaxPool" for layer in d1.layers)
        assert not any(type(layer).__name__ == "ConvLeakyMaxPool" for layer in d2.layers)
    g2.set_weights(g1.get_weights())
    d2.set_weights(d1.get_weights())
    initial = [w.copy() for w in d1.get_weights()]
    clip = 0.01 if loss == "wgan" else None
    gp = 10.0 if loss == "wgan_gp" else 0.0

    latent = int(cfg.latent.dim)
    gan = GAN(g1, d1, get_loss(loss), {}, latent_dim=latent, n_critic=n_critic, clip_value=clip, gp_weight=gp,
              seed=7)
    # gan train's optimizer (one fused kernel per weight) against the reference's plain Keras RMSprop
    from gan_cli.fast.fused_rmsprop import FusedRMSprop

    gan.compile(FusedRMSprop(1e-3), FusedRMSprop(1e-3), steps_per_execution=2)
    # csm: one G call makes a round's 5 fake batches (critic_fakes; default for generators of >= 1M weights,
    # forced here for the small test networks); ring: one call per update, as in the reference
    gan.batched_fakes = case == "csm"
    ref = T.ReferenceWGAN(g2, d2, latent_dim=latent, n_critic=n_critic, clip_value=clip, gp_weight=gp,
                          noise=SharedNoise(gan))
    ref.compile(keras.optimizers.RMSprop(1e-3), keras.optimizers.RMSprop(1e-3))

    x, _ = data.arrays()
    rows = np.random.default_rng(1).integers(0, len(x), rounds * n_critic * batch)
    real = x[rows].reshape(rounds, n_critic, batch, *x.shape[1:])  # [round, critic update, row, *shape]
    fused_data = np.swapaxes(real, 1, 2)  # GAN fit layout: (B, n_critic, *shape) per round
    gan.fit(tf.data.Dataset.from_tensor_slices(fused_data), epochs=1, steps_per_epoch=rounds, verbose=0, shuffle=False)
    plain = real.reshape(rounds, n_critic * batch, *x.shape[1:])  # reference: update i = rows i*B..(i+1)*B-1
    ref.fit(tf.data.Dataset.from_tensor_slices(plain), epochs=1, steps_per_epoch=rounds, verbose=0, shuffle=False)

    assert int(gan.round.numpy()) == rounds
    # csm with clipping: the fused layer sums its gradients in another order (they agree with autodiff's to ~1e-7 of
    # their largest component, test_conv_max_pool.py), and RMSprop's lr * g / (sqrt(v) + 1e-7) moves a component at
    # that rounding floor (|g| ~ 1e-8) by up to ~1e-4 per update either way (measured: 7e-6 after 1 round, 4e-5
    # after 4); 1e-4 is 1% of the clip value and 1/30 of a full RMSprop step (lr / sqrt(1 - rho)); a wrong gradient
    # would move weights by whole steps
    atol = 1e-4 if (case, loss) == ("csm", "wgan") else 1e-6
    for a, b in zip(g1.get_weights() + d1.get_weights(), g2.get_weights() + d2.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(d1.get_weights(), initial))
    assert moved > 1e-3  # the rounds really trained D
    if clip:
        assert max(float(np.abs(w).max()) for w in d1.get_weights()) <= clip + 1e-7


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_fused_rmsprop_matches_keras_rmsprop(momentum):
    """FusedRMSprop: Keras's RMSprop updates (inside a compiled function, as in training) and Keras's state:
    the same optimizer.variables, so checkpoints are interchangeable."""
    import keras
    import tensorflow as tf

    from gan_cli.fast.fused_rmsprop import FusedRMSprop
    from gan_cli.training.optimizers import build_optimizer

    rng = np.random.default_rng(0)
    start = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    grads = [[rng.standard_normal(w.shape).astype(np.float32) for w in start] for _ in range(5)]

    def run(optimizer):
        weights = [keras.Variable(w) for w in start]
        optimizer.build(weights)

        @tf.function
        def apply(g):
            optimizer.apply_gradients(zip(g, weights))

        for g in grads:
            apply([tf.constant(x) for x in g])
        return [w.numpy() for w in weights], optimizer

    fused, opt_f = run(FusedRMSprop(0.01, rho=0.9, momentum=momentum))
    plain, opt_p = run(keras.optimizers.RMSprop(0.01, rho=0.9, momentum=momentum))
    for a, b, w0 in zip(fused, plain, start):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert float(np.abs(a - w0).max()) > 1e-3
    assert len(opt_f.variables) == len(opt_p.variables)  # no extra state (momentum 0's scratch is not in it)
    for a, b in zip(opt_f.variables, opt_p.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert isinstance(build_optimizer({"name": "rmsprop", "lr": 1e-3}), FusedRMSprop)
    assert type(build_optimizer({"name": "rmsprop", "lr": 1e-3}, fused=False)) is keras.optimizers.RMSprop


@pytest.mark.parametrize("overrides,independent", [
    (["model=mlp"], True),
    (["model=mlp", "model.generator.activation=maxout", "model.generator.hidden=[16]"], True),
    (["dataset=digits", "model=mlp", "model.conditional=true", "latent.dim=8"], True),
    (["model=mlp", "model.generator.batch_norm=true"], False),  # batch statistics: rows depend on each other
    (["model=mlp", "model.generator.batch_norm=virtual", "model.vbn_ref_size=16"], False),  # not whitelisted
])
def test_round_fakes_from_one_generator_call_equal_per_update_calls(overrides, independent):
    """``GAN.critic_fakes``: the n_critic fake batches of a round from one G call give the samples that
    n_critic separate calls on the same slots' noise give (and labels, for a conditional G), for every
    generator ``rows_independent`` accepts."""
    import tensorflow as tf

    from gan_cli.models.per_sample import rows_independent

    tiny = [o for o in TINY if not o.startswith("dataset.num_samples")] if "dataset=digits" in overrides else TINY
    gan, _, _ = conftest.build([*overrides, "train.n_critic=3"], tiny)
    assert rows_independent(gan.generator) is independent
    if not independent:
        assert not gan.batched_fakes
        return
    batch, first_slot = 6, tf.constant(40, tf.int64)
    y_all = tf.constant(np.random.default_rng(0).integers(0, 10, (batch, 3)), tf.int32) if gan.conditional else None
    fakes = gan.critic_fakes(batch, y_all, first_slot)
    assert tuple(fakes.shape) == (3, batch, *gan.generator.output_shape[1:])
    for i in range(3):
        one = gan.generate(gan.latent(batch, first_slot + i), None if y_all is None else y_all[:, i], training=True)
        np.testing.assert_allclose(np.asarray(fakes[i]), np.asarray(one), rtol=1e-5, atol=1e-6)


def test_only_large_generators_make_round_fakes_in_one_call():
    from gan_cli.fast import BATCHED_FAKES_MIN_PARAMS

    small, _, _ = conftest.build(["model=mlp"], TINY)
    large, _, _ = conftest.build(["model=mlp", "model.generator.hidden=[1024,1024]"], TINY)
    assert small.generator.count_params() < BATCHED_FAKES_MIN_PARAMS <= large.generator.count_params()
    assert not small.batched_fakes and large.batched_fakes


def _train_rounds(cfg, data, rounds: int):
    import tensorflow as tf

    from gan_cli.training.build import build_gan

    gan = build_gan(cfg, data)
    ds = data.tf_dataset(int(cfg.train.batch_size), 0, batches_per_step=int(cfg.train.n_critic))
    gan.fit(ds.take(rounds), epochs=1, steps_per_epoch=rounds, verbose=0, shuffle=False)
    return gan, tf


def _mixed_vs_float32(setting: str, rounds: int = 2):
    """(mixed-precision GAN, float32 GAN, initial GAN) after ``rounds`` rounds of SGD training from one seed."""
    from gan_cli.config import resolve as config_mod
    from gan_cli.data.build import build_dataset
    from gan_cli.training.build import build_gan

    def resolved(mixed: str):
        cfg = compose([*TINY, "loss=nsgan", "optimizer=sgd", "optimizer.generator.lr=0.01",
                       "optimizer.discriminator.lr=0.01", "optimizer.generator.momentum=0.0",
                       "optimizer.discriminator.momentum=0.0", "train.steps_per_execution=2",
                       f"train.mixed_precision={mixed}"])
        data = build_dataset(cfg.dataset)
        return config_mod.resolve(cfg, data), data

    cfg, data = resolved(setting)
    mixed, _ = _train_rounds(cfg, data, rounds)
    cfg32, data32 = resolved("false")
    full, _ = _train_rounds(cfg32, data32, rounds)
    return mixed, full, build_gan(resolved("false")[0], data32)  # same seed -> same initial weights


def _assert_updates_close(mixed, full, start, tolerance: float):
    """Every critic weight's change after training: the mixed run's within ``tolerance`` x the largest change
    of the float32 run (a missing float16 unscaling would make them 2^15 times larger)."""
    for w_mixed, w_full, w0 in zip(mixed.discriminator.get_weights(), full.discriminator.get_weights(),
                                   start.discriminator.get_weights()):
        step_full, step_mixed = w_full - w0, w_mixed - w0
        scale = float(np.abs(step_full).max())
        assert scale > 0
        assert float(np.abs(step_mixed - step_full).max()) <= tolerance * scale + 1e-6


@pytest.mark.parametrize("setting,dtype,tolerance", [("float16", "float16", 0.05), ("bfloat16", "bfloat16", 0.1)])
def test_mixed_precision_trains_on_cpu_with_float32_logits(setting, dtype, tolerance):
    """train.mixed_precision=float16|bfloat16: half-precision hidden layers, float32 logits and samples;
    float16 with loss-scaled optimizers, bfloat16 without (it has float32's range); updates match float32
    training to the half type's precision (bfloat16 keeps 8 significant bits, float16 11)."""
    import keras
    import tensorflow as tf

    mixed, full, start = _mixed_vs_float32(setting)
    assert isinstance(mixed.d_optimizer, keras.optimizers.LossScaleOptimizer) == (dtype == "float16")
    assert mixed.discriminator.layers[1].compute_dtype == dtype
    assert mixed.discriminator.layers[-1].compute_dtype == "float32"
    fake = mixed.generate(mixed.latent(16, 0), training=True)
    logits = mixed.discriminator(fake, training=True)
    assert fake.dtype == tf.float32 and logits.dtype == tf.float32
    assert int(mixed.round.numpy()) == 2
    _assert_updates_close(mixed, full, start, tolerance)


def test_mixed_precision_true_is_float16_on_a_gpu_and_bfloat16_on_a_cpu():
    from gan_cli.training import precision
    assert precision.compute_dtype(True, gpu=True) == "float16"
    assert precision.compute_dtype(True, gpu=False) == "bfloat16"
    assert precision.compute_dtype("bfloat16", gpu=True) == "bfloat16"
    assert precision.compute_dtype(False, gpu=True) is None
    # the run folder's resolved config names the type this machine computes in (resume, reproduce keep it)
    from gan_cli.config import resolve as config_mod
    from gan_cli.data.build import build_dataset
    from gan_cli.job.train import resolve_for_this_machine

    cfg = compose([*TINY, "train.mixed_precision=true"])
    resolved = resolve_for_this_machine(config_mod.resolve(cfg, build_dataset(cfg.dataset)))
    assert resolved.train.mixed_precision == precision.compute_dtype(True)
    # emulated types warn: float16 without a GPU, bfloat16 on a CPU without bfloat16 instructions
    assert "meant for GPUs" in precision.warning("float16", gpu=False)
    assert "no bfloat16 instructions" in precision.warning("bfloat16", gpu=False, bf16_cpu=False)
    assert precision.warning("bfloat16", gpu=False, bf16_cpu=True) is None
    assert precision.warning("float16", gpu=True) is None and precision.warning(None, gpu=False) is None
    assert precision.cpu_has_bf16("processor : 0\nflags : fpu avx2 amx_bf16 amx_tile\n")
    assert precision.cpu_has_bf16("flags\t\t: fpu avx512f avx512_bf16\n")
    assert not precision.cpu_has_bf16("flags : fpu avx2 avx512f\nbugs : spectre\n")


def test_mixed_precision_float16_warns_on_cpu(capsys, tmp_path):
    from gan_cli.job.train import train

    train(compose([*TINY, "train.steps=2", "train.eval_every=2", "train.checkpoint_every=2",
                   "train.mixed_precision=float16"]), tmp_path)
    err = capsys.readouterr().err
    assert "meant for GPUs" in err and "mixed precision float16" in err  # the warning and the start-up line


def test_jit_compile_auto_means_xla_on_a_gpu_only():
    from gan_cli.training.build import resolve_jit_compile

    assert resolve_jit_compile("auto", gpu=True, distributed=False, deterministic=False)
    assert not resolve_jit_compile("auto", gpu=False, distributed=False, deterministic=False)
    assert not resolve_jit_compile("auto", gpu=True, distributed=True, deterministic=False)
    assert not resolve_jit_compile("auto", gpu=True, distributed=False, deterministic=True)
    assert resolve_jit_compile(True, gpu=False, distributed=True, deterministic=True)
    assert not resolve_jit_compile(False, gpu=True, distributed=False, deterministic=False)


@pytest.mark.parametrize("overrides,expected", [
    ([], 50), (["train.steps_per_execution=25"], 25), (["dataset=digits"], 10),
    (["dataset=csm", "dataset.array=minidsp_uma-16", "dataset.num_samples=64"], 10)])
def test_steps_per_execution_null_is_the_datas_recommendation(overrides, expected):
    """null (the default): 50 rounds per compiled call on 2D toy data (ring), whose rounds take milliseconds,
    10 on images and CSMs; a count given stays. Keras gets it, capped to a divisor of the evaluation block."""
    from gan_cli.config import resolve as config_mod
    from gan_cli.training.build import steps_per_execution as _steps_per_execution
    from gan_cli.data.build import build_dataset

    cfg = compose(overrides)
    config_mod.validate(cfg)
    resolved = config_mod.resolve(cfg, build_dataset(cfg.dataset))
    assert resolved.train.steps_per_execution == expected
    assert _steps_per_execution(resolved) == expected  # divides every default block (500, 100)
    with_block = config_mod.resolve(compose([*overrides, "train.eval_every=20", "train.checkpoint_every=20",
                                             "train.steps=40"]), build_dataset(cfg.dataset))
    assert _steps_per_execution(with_block) == math.gcd(expected, 20)


@pytest.mark.parametrize("setting,said", [("auto", "XLA off"), ("true", "XLA on")])
def test_start_up_line_says_whether_xla_compiles_the_step(capsys, tmp_path, setting, said):
    """On this CPU-only machine auto leaves XLA off; true compiles the step with XLA, here with
    minibatch discrimination in D (its grouped comparison once had a cond XLA could not compile)."""
    from gan_cli.job.train import train

    train(compose([*TINY, "model=mlp", "model.discriminator.mbd_kernels=4", "train.steps=4",
                         "train.eval_every=4", "train.checkpoint_every=4", f"train.jit_compile={setting}"]), tmp_path)
    start = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("gan-cli:"))
    assert f"device CPU ({os.cpu_count()} cores), {said};" in start


def test_deterministic_run_turns_xla_off_says_so_and_leaves_determinism_as_it_was(capsys, tmp_path):
    from gan_cli.core.tf_context import op_determinism
    from gan_cli.job.train import train

    assert not op_determinism()
    train(compose([*TINY, "train.steps=2", "train.eval_every=2", "train.checkpoint_every=2",
                   "train.deterministic=true", "train.jit_compile=true"]), tmp_path)
    err = capsys.readouterr().err
    assert "XLA off;" in err and "warning: train.jit_compile=true is off for this run" in err
    assert not op_determinism()  # process-wide switch: back off for the next job of a sweep


@pytest.mark.slow  # ~1 min: two whole processes (TensorFlow imported twice)
def test_whole_process_benchmark_times_every_phase(tmp_path, capsys):
    """--whole-process: a gan train process (report on) and the keras-io-style script, phase by phase."""
    out = tmp_path / "whole.md"
    T = _throughput()
    assert T.main(["--whole-process", "--whole-steps", "100", "--repeats", "1", "--out", str(out)]) == 0
    table = out.read_text()
    rows = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("| 100 |")}
    assert set(rows) == {"reference", "gan train"}
    cells = [c.strip() for c in rows["gan train"].strip("|").split("|")]
    to_setup, first, training, evaluation, exit_, total, cpu, ready = (float(c) for c in cells[2:])
    assert 0 < to_setup <= first and training > 0 and evaluation >= 0 and exit_ >= 0 and cpu > 0
    assert abs(first + training + evaluation + exit_ - total) < 0.2 and ready >= total - 0.1
    assert re.search(r"100 steps: reference [0-9.]+ s / gan train [0-9.]+ s = \*\*[0-9.]+x\*\*", table)
    assert "100 steps, repeat 1, reference:" in table  # every run's line


@pytest.mark.slow  # ~30 s: runs both trainers; the equivalence tests above stay in the default run
def test_benchmark_script_prints_a_ratio(tmp_path, capsys):
    out = tmp_path / "throughput.md"
    T = _throughput()
    assert T.main(["--cases", "ring", "--repeats", "1", "--steps", "10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = out.read_text()
    assert "device: CPU" in printed
    row = next(line for line in table.splitlines() if line.startswith("| ring |"))
    ratio = float(re.search(r"\*\*([0-9.]+)x\*\*", row).group(1))
    assert ratio > 0
    # FLOP/s table: 2-128-128 MLPs, batch 256, n_critic 5 -> 0.344 GFLOP per round (round_flops docstring)
    assert "| ring | 0.344 |" in table
    startup = next(line for line in table.splitlines() if line.startswith("| ring | ") and line.count("|") == 4)
    seconds = [float(v) for v in startup.strip("|").split("|")[1:3]]
    assert 0 < seconds[0] <= seconds[1] < 120


def test_round_flops_formula():
    T = _throughput()
    # G 2-128-128-2: 2*128 + 128*128 + 128*2 MACs; D 2-128-128-1: 2*128 + 128*128 + 128
    g, d = 2 * 128 + 128 * 128 + 128 * 2, 2 * 128 + 128 * 128 + 128
    b = 256
    assert T.round_flops(g, d, b, 5) == 5 * (2 * b * g + 12 * b * d) + 6 * b * g + 4 * b * d


def test_fused_critic_macs_by_hand():
    """csm critic, 16 mics, filters [8, 16], 3 x 3 stride 1: x 16x16x2 -> 16x16x8 -> 16x16x16 -> pooled -> Dense 1."""
    T = _throughput()
    cfg = compose([*EQUIVALENCE_CASES["csm"]])
    from gan_cli.data.build import build_dataset

    _, critic = _networks(cfg, build_dataset(cfg.dataset))
    first, last = 16 * 16 * (3 * 3 * 2 * 8), 16 * 16 * (3 * 3 * 8 * 16)
    assert T.model_macs(critic) == first + last + 16
    # a critic update skips the last conv's kernel and input gradients and the first conv's kernel gradient,
    # and runs F * k * k * C1 * (k * k * C0 + 1) MACs for the first kernel's gradient from the pooled windows
    assert T.sparse_backward_macs(critic) == 2 * last + first - 16 * 9 * 8 * (9 * 2 + 1)


def test_steps_option_takes_a_count_per_case():
    T = _throughput()
    assert T.case_steps("csm", None) == T.CASES["csm"][1]
    assert T.case_steps("csm", ["500"]) == 500
    assert T.case_steps("csm", ["500", "csm=200"]) == 200
    assert T.case_steps("ring", ["csm=200"]) == T.CASES["ring"][1]
    with pytest.raises(ValueError, match="unknown case 'cms'.*valid: ring"):
        T.parse_steps(["cms=200"])
    with pytest.raises(ValueError, match="positive integer"):
        T.parse_steps(["csm=0"])


def test_variants_share_the_reference_runs_and_each_get_a_ratio(tmp_path, monkeypatch, capsys):
    """--variants: one reference run per case and repeat, one gan train run per variant, each variant's
    own flags in its worker's argv and its own ratio column (worker results stubbed: this checks the
    bookkeeping and the table, the timed runs themselves are covered by test_benchmark_script_prints_a_ratio)."""
    T = _throughput()
    calls = []
    rates = {"ref": 10.0, "fp32": 20.0, "xla": 30.0}

    def fake_worker(side, case, argv, task=None):
        cmd = T.worker_command(side, case, argv, task)
        calls.append((side, case, task))
        if task == "matmul":
            return {"device": "CPU test", "onednn": "1", "matmul": 1e11}
        variant = side.partition(":")[2]
        assert cmd[cmd.index("--worker") + 1] == ("gan" if variant else "ref")
        # each variant's flags reach its own worker only
        assert cmd[cmd.index("--jit") + 1] == {"fp32": "false", "xla": "true"}[variant] if variant else "--jit" not in cmd
        rate = rates[variant or "ref"]
        return {"rate": [rate, rate / 2], "steps": 100, "batch": 256, "n_critic": 5, "loss": "wgan",
                "macs": (1000, 1000), "sparse_macs": 0 if variant == "xla" else 500}  # XLA: dense backward

    monkeypatch.setattr(T, "run_worker", fake_worker)
    out = tmp_path / "t.md"
    assert T.main(["--cases", "ring", "--repeats", "2", "--variants", "fp32", "xla", "--no-startup",
                   "--out", str(out)]) == 0
    timed = [c for c in calls if c[2] is None]
    assert sorted(c[0] for c in timed) == ["gan:fp32", "gan:fp32", "gan:xla", "gan:xla", "ref", "ref"]
    table = out.read_text()
    assert "| gan train fp32 steps/s | **ratio** | gan train xla steps/s | **ratio** |" in table
    row = next(line for line in table.splitlines() if line.startswith("| ring | wgan"))
    assert "| 10.0 (10.0-10.0) | 20.0 (20.0-20.0) | **2.00x** | 30.0 (30.0-30.0) | **3.00x** |" in row
    assert "fp32: train.jit_compile=false" in table and "xla: train.jit_compile=true" in table
    # FLOP table: each variant's rate with the FLOPs it executes (round_flops with its own sparse MACs)
    fp32_flops, xla_flops = T.round_flops(1000, 1000, 256, 5, d_sparse_macs=500), T.round_flops(1000, 1000, 256, 5)
    flop_row = next(line for line in table.splitlines() if line.startswith("| ring | ") and "(fp32)" in line)
    assert f"{fp32_flops / 1e9:.3g} (fp32), {xla_flops / 1e9:.3g} (xla)" in flop_row
    assert f"| {fp32_flops * 20 / 1e9:.1f} | {xla_flops * 30 / 1e9:.1f} |" in flop_row


def test_a_failing_variant_is_reported_and_the_others_still_timed(tmp_path, monkeypatch, capsys):
    T = _throughput()

    def fake_worker(side, case, argv, task=None):
        if task == "matmul":
            return {"device": "CPU test", "onednn": "1", "matmul": 1e11}
        if side == "gan:xla":
            raise RuntimeError("XLA compilation failed")
        return {"rate": [10.0, 5.0] if side == "ref" else [20.0, 10.0], "steps": 100, "batch": 256,
                "n_critic": 5, "loss": "wgan", "macs": (1000, 1000), "sparse_macs": 0}

    monkeypatch.setattr(T, "run_worker", fake_worker)
    out = tmp_path / "t.md"
    assert T.main(["--cases", "ring", "--repeats", "1", "--variants", "fp32", "xla", "--no-startup",
                   "--out", str(out)]) == 0
    assert "gan train xla failed: XLA compilation failed" in capsys.readouterr().out
    row = next(line for line in out.read_text().splitlines() if line.startswith("| ring | wgan"))
    assert "| 10.0 | 20.0 | **2.00x** | failed | failed |" in row
