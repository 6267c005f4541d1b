#!/usr/bin/env python
"""Throughput: ``gan train`` against a straightforward keras-io style WGAN loop (generator steps/s).

    python benchmarks/throughput.py                                  # all cases, 3 repeats
    python benchmarks/throughput.py --reference-onednn --out benchmarks/results/throughput.md
    python benchmarks/throughput.py --variants default mixed --out benchmarks/results/throughput.md  # a CPU
    python benchmarks/throughput.py --variants fp32 mixed xla mixed+xla --steps ring=500 csm=200   # a GPU
    python benchmarks/throughput.py --whole-process --sweep-jobs 8   # whole processes, what a user waits for

Cases (``--cases``): ``ring`` = ``experiment=bench_ring`` (ring data, ReLU MLPs 2-128-128, batch 256,
WGAN n_critic 5, RMSProp 5e-5, clip 0.01), ``csm`` = ``experiment=bench_csm`` (seed 000's csm_mlp
networks on 64-microphone CSMs, batch 64, the same WGAN settings), and ``ring_gp`` / ``csm_gp``: the
same with ``loss=wgan_gp`` (gradient penalty 10 instead of clipping; optimizer unchanged).

Reference (``ReferenceWGAN``): what a user would otherwise write, in the style of the keras-io WGAN-GP
example: a ``keras.Model`` whose ``train_step`` runs a Python ``for`` loop over the ``n_critic``
critic updates and clips by assigning each critic weight in a Python loop, compiled with Keras's
default settings (``steps_per_execution=1``, ``jit_compile="auto"``: XLA off on a CPU, on on a GPU),
fed by a ``tf.data`` pipeline of plain batches (``from_tensor_slices.shuffle.repeat.batch.prefetch``;
one element = the ``n_critic * B`` real samples of a round), with a callback that reads the logs
after every step as Keras's default progress bar does. Its networks come from the project's own
model builders (from plain Keras layers: ``train.fast=false``) and optimizer factory with the
same seed, so both sides train identical networks on the same data with the same batch size.

``gan train``: ``gan_cli.job.train.train``, the real code path (data, ``build_gan``, the fused step,
callbacks, checkpoint and evaluation at the end), with evaluation and checkpoints only at the end as
in the bench experiments.

Whole processes (``--whole-process``): ``gan train`` and a keras-io-style script (benchmarks/keras_io_ring.py),
each a whole process from the command to its exit, phase by phase; see benchmarks/whole_process.py.

Processes: every timed run is a fresh process (``--worker``) with its side's environment: the
reference gets the caller's environment, i.e. TensorFlow's defaults as a user's own script gets them;
``gan train`` gets what the ``gan`` command sets (``TF_ENABLE_ONEDNN_OPTS=1`` unless the caller set
it); ``--reference-onednn`` adds the reference with ``TF_ENABLE_ONEDNN_OPTS=1`` as a third side, to
show how much of the gain is that setting.

Timing: steady state only. Each run records the time at the end of every compiled call
(reference: every step; ``gan train``: every ``train.steps_per_execution`` steps, from its progress
bar); the first ``train.steps_per_execution`` steps (``gan train``'s first compiled call: tracing and
first-call set-up) are dropped on both sides and the rate is the remaining steps over their time.
The sides alternate within each repeat (order reversed every repeat); the table gives the median
over ``--repeats`` and the ratio of the medians; the same steps over the process's CPU time (all
threads) are shown too, as other load on the machine slows wall-clock rates but hardly CPU-time
rates. Separately, ``gan train`` is started as a subprocess (with ``train.steps_per_execution=1``)
and the time from the command to its first finished training step is reported (target < 10 s).

FLOP/s (the csm case is the compute-bound one): matmul/convolution FLOPs per round, counted from
layer shapes (``round_flops``), times the measured rounds/s, against the machine's measured float32
matmul rate (``matmul_flops``: the best of several large ``tf.matmul`` calls, in both sides'
environments) as the practical limit. ``gan train``'s own count leaves out the dense backward
convolutions its fused conv + max-pool layer does not run (``sparse_backward_macs``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the caller's own TF_ENABLE_ONEDNN_OPTS, read before gan_cli.cli.main (which sets the `gan` default) is imported
_CALLER_ONEDNN = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gan_cli.core.tf_import import quiet_tensorflow  # noqa: E402

if _CALLER_ONEDNN is None:  # keep TensorFlow's default in this process (the reference's side)
    os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)
from machine_info import cpu_model, usable_cores  # noqa: E402

quiet_tensorflow()  # TensorFlow's C++ start-up chatter off (replayed only if the import fails)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# case -> (experiment overrides, timed steps per repeat by default)
CASES: dict[str, tuple[list[str], int]] = {
    "ring": (["experiment=bench_ring"], 1000),
    "ring_gp": (["experiment=bench_ring", "loss=wgan_gp"], 500),
    "csm": (["experiment=bench_csm"], 20),
    "csm_gp": (["experiment=bench_csm", "loss=wgan_gp"], 10),
}


# ---------------------------------------------------------------------------------- reference
class ReferenceWGAN(keras.Model):
    """A WGAN (weight clipping) or WGAN-GP written the straightforward keras-io way.

    ``fit`` data: plain batches ``(n_critic * B, *sample_shape)``; critic update ``i`` of a step uses
    rows ``i*B .. (i+1)*B - 1``. ``noise``: optional object with ``latent(batch, slot)`` ``(B, latent_dim)``
    and ``epsilon(batch, slot)`` ``(B,)`` to reproduce another model's random draws (slot ``s`` of
    round ``r`` is ``r * (n_critic + 1) + s``: critic updates 0..n_critic-1, then the generator);
    without it, ``tf.random.normal`` / ``tf.random.uniform`` as in the keras-io example.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int, n_critic: int = 5,
                 clip_value: float | None = None, gp_weight: float = 0.0, noise=None, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim, self.n_critic = int(latent_dim), int(n_critic)
        self.clip_value, self.gp_weight = clip_value, float(gp_weight)
        self.noise = noise
        self.rounds = tf.Variable(0, dtype=tf.int64, trainable=False)  # only for ``noise`` slots

    def compile(self, d_optimizer, g_optimizer, **kwargs):  # noqa: D401 - Keras signature
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def call(self, z, training=False):
        return self.generator(z, training=training)

    def latent(self, batch, slot):
        if self.noise is not None:
            return self.noise.latent(batch, slot)
        return tf.random.normal(shape=(batch, self.latent_dim))

    def epsilon(self, batch, slot):
        if self.noise is not None:
            return self.noise.epsilon(batch, slot)
        return tf.random.uniform(shape=(batch,), minval=0.0, maxval=1.0)

    def gradient_penalty(self, real, fake, eps):
        """(||grad D(x_hat)|| - 1)^2 averaged, x_hat = eps real + (1 - eps) fake."""
        eps = tf.reshape(eps, [-1] + [1] * (len(real.shape) - 1))
        interpolated = eps * real + (1.0 - eps) * fake
        with tf.GradientTape() as gp_tape:
            gp_tape.watch(interpolated)
            pred = self.discriminator(interpolated, training=True)
        grads = gp_tape.gradient(pred, [interpolated])[0]
        norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=list(range(1, len(real.shape)))))
        return tf.reduce_mean((norm - 1.0) ** 2)

    def train_step(self, real_images):
        batch = tf.shape(real_images)[0] // self.n_critic
        base = self.rounds * (self.n_critic + 1)
        for i in range(self.n_critic):
            real = real_images[i * batch:(i + 1) * batch]
            z = self.latent(batch, base + i)
            with tf.GradientTape() as tape:
                fake = self.generator(z, training=True)
                fake_logits = self.discriminator(fake, training=True)
                real_logits = self.discriminator(real, training=True)
                d_loss = tf.reduce_mean(fake_logits) - tf.reduce_mean(real_logits)
                if self.gp_weight > 0:
                    d_loss = d_loss + self.gp_weight * self.gradient_penalty(real, fake, self.epsilon(batch, base + i))
            d_grads = tape.gradient(d_loss, self.discriminator.trainable_variables)
            self.d_optimizer.apply_gradients(zip(d_grads, self.discriminator.trainable_variables))
            if self.clip_value is not None:
                for w in self.discriminator.trainable_weights:
                    w.assign(tf.clip_by_value(w, -self.clip_value, self.clip_value))
        z = self.latent(batch, base + self.n_critic)
        with tf.GradientTape() as tape:
            generated = self.generator(z, training=True)
            g_loss = -tf.reduce_mean(self.discriminator(generated, training=True))
        g_grads = tape.gradient(g_loss, self.generator.trainable_variables)
        self.g_optimizer.apply_gradients(zip(g_grads, self.generator.trainable_variables))
        self.rounds.assign_add(1)
        return {"d_loss": d_loss, "g_loss": g_loss}


def reference_dataset(x: np.ndarray, batch: int, n_critic: int, seed: int = 0) -> tf.data.Dataset:
    """Plain batches of ``n_critic * batch`` real samples, the usual tf.data way."""
    return (tf.data.Dataset.from_tensor_slices(x).shuffle(min(len(x), 10_000), seed=seed).repeat()
            .batch(n_critic * batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


# ---------------------------------------------------------------------------------- timing
def _now() -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process, all threads)."""
    return time.perf_counter(), time.process_time()


class _Clock(keras.callbacks.Callback):
    """Records ``_now()`` after every compiled call (``on_train_batch_end``)."""

    def __init__(self):
        super().__init__()
        self.times: list[tuple[float, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(_now())


def steady_rate(times: list[tuple[float, float]], steps_per_call: int, warmup_calls: int) -> tuple[float, float]:
    """(steps per wall-clock second, steps per CPU second) after the first ``warmup_calls`` compiled calls
    (``times[k]``: ``_now()`` at the end of call ``k``). The CPU-second rate is what a run would reach
    with the cores to itself: other load on the machine slows the first, hardly the second."""
    if len(times) <= warmup_calls:
        raise RuntimeError(f"only {len(times)} compiled calls recorded; raise --steps")
    steps = (len(times) - warmup_calls) * steps_per_call
    (w0, c0), (w1, c1) = times[warmup_calls - 1], times[-1]
    return steps / (w1 - w0), steps / max(c1 - c0, 1e-9)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_module

    with initialize_config_module("gan_cli.conf", version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def gan_flags(jit: str, mixed: bool) -> list[str]:
    """The ``gan train`` overrides of ``--jit auto|true|false`` and ``--mixed-precision``."""
    return [f"train.jit_compile={jit}", f"train.mixed_precision={str(mixed).lower()}"]


def worker_flags(jit: str, mixed: bool) -> list[str]:
    """The same settings as worker command-line flags."""
    return ["--jit", jit] + (["--mixed-precision"] if mixed else [])


# --variants: name -> (train.jit_compile, train.mixed_precision) of one `gan train` configuration;
# "default" is gan train's own (jit_compile auto: XLA on a GPU, off on a CPU), the others are explicit
VARIANTS: dict[str, tuple[str, bool]] = {"default": ("auto", False), "fp32": ("false", False),
                                         "mixed": ("false", True), "xla": ("true", False),
                                         "mixed+xla": ("true", True)}


def variant_argv(variant: str) -> list[str]:
    """The worker flags of a ``--variants`` name."""
    return worker_flags(*VARIANTS[variant])


def parse_steps(tokens: list[str] | None) -> dict[str | None, int]:
    """``--steps`` values: ``N`` (every case) and/or ``CASE=N`` (one case); key ``None`` = every case."""
    steps: dict[str | None, int] = {}
    for token in tokens or []:
        case, _, value = token.rpartition("=")
        if case and case not in CASES:
            raise ValueError(f"--steps {token}: unknown case {case!r}; valid: {', '.join(CASES)}")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"--steps {token}: the step count must be a positive integer")
        steps[case or None] = int(value)
    return steps


def case_steps(case: str, tokens: list[str] | None) -> int:
    """Timed steps for ``case``: its ``CASE=N`` in ``--steps``, else a plain ``N``, else the case's default."""
    steps = parse_steps(tokens)
    return steps.get(case, steps.get(None, CASES[case][1]))


def case_config(case: str, steps: int, args) -> tuple:
    """(composed config for ``train``, warm-up steps, steps per compiled call) for ``steps`` timed steps."""
    from gan_cli.config import resolve as config_mod
    from gan_cli.data.build import build_dataset

    overrides = list(CASES[case][0]) + list(args.overrides)
    cfg0 = compose(overrides)
    data = build_dataset(cfg0.dataset)  # the timing overrides below leave the dataset as it is
    spe = int(config_mod.resolve(cfg0, data).train.steps_per_execution)  # null: the data's recommendation
    steps = spe * max(1, math.ceil(steps / spe))          # whole compiled calls
    warmup = spe                                           # the first compiled call: tracing, first-call set-up
    total = warmup + steps
    overrides += [f"train.steps={total}", f"train.eval_every={total}", f"train.checkpoint_every={total}",
                  "metrics.num_samples=200", "train.report=false", *gan_flags(args.jit, args.mixed_precision)]
    cfg = compose(overrides)
    config_mod.validate(cfg)
    resolved = config_mod.resolve(cfg, data)
    return cfg, resolved, data, warmup, steps, spe


def run_reference(resolved, data, warmup: int, steps: int) -> tuple[tuple[float, float], tuple[int, int]]:
    """Steady-state generator steps/s (wall, CPU) of ``ReferenceWGAN`` and the networks' (G, D) MACs per sample."""
    from gan_cli.models import get_builder
    from gan_cli.training.optimizers import build_optimizer

    from gan_cli import fast

    keras.utils.set_random_seed(int(resolved.train.seed))
    # the same architecture from plain Keras layers, as train.fast=false builds it (for csm_mlp: Conv2D ->
    # LeakyReLU -> GlobalMaxPooling2D, the layers a user would write, instead of gan train's fused
    # ConvLeakyMaxPool; same weights and outputs)
    with fast.switch(False):
        generator, discriminator = get_builder(resolved.model.name)(resolved.model, data, int(resolved.latent.dim), False)
    loss = resolved.loss.name
    model = ReferenceWGAN(generator, discriminator, int(resolved.latent.dim), int(resolved.train.n_critic),
                          clip_value=float(resolved.loss.clip_value) if loss == "wgan" else None,
                          gp_weight=float(resolved.loss.get("gp_weight", 0.0)) if loss == "wgan_gp" else 0.0)
    # plain keras.optimizers.RMSprop, as a user's script has (gan train's is FusedRMSprop)
    model.compile(build_optimizer(resolved.optimizer.discriminator, fused=False),
                  build_optimizer(resolved.optimizer.generator, fused=False))
    x, _ = data.arrays()
    ds = reference_dataset(x, int(resolved.train.batch_size), int(resolved.train.n_critic))
    clock = _Clock()
    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[clock], shuffle=False)
    macs = (model_macs(generator), model_macs(discriminator))
    return steady_rate(clock.times, 1, warmup), macs


def gan_sparse_macs(resolved, data) -> int:
    """``sparse_backward_macs`` of ``gan train``'s critic (built from ``resolved.model`` as ``gan train`` does);
    0 when its step is XLA-compiled (``train.jit_compile`` resolved on): the fused layer then differentiates
    densely, as the reference does."""
    from gan_cli.models import get_builder
    from gan_cli.training.build import jit_compile_for

    if jit_compile_for(resolved):
        return 0
    _, discriminator = get_builder(resolved.model.name)(resolved.model, data, int(resolved.latent.dim), False)
    return sparse_backward_macs(discriminator)


@contextlib.contextmanager
def _timed_progress_bar(clock: list):
    """Make ``gan train``'s progress bar also record the end time of every compiled call into ``clock``."""
    import gan_cli.callbacks.monitor as callbacks_mod

    original = callbacks_mod.ProgressBar

    class TimedProgressBar(original):
        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            clock.append(_now())

    callbacks_mod.ProgressBar = TimedProgressBar
    try:
        yield
    finally:
        callbacks_mod.ProgressBar = original


def run_gan(cfg, warmup: int, spe: int) -> tuple[float, float]:
    """Steady-state generator steps/s (wall, CPU) of ``gan_cli.job.train.train(cfg)`` (its output is swallowed)."""
    from gan_cli.job.train import train

    clock: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as run_dir, _timed_progress_bar(clock), \
            contextlib.redirect_stderr(io.StringIO()):
        train(cfg, run_dir)
    return steady_rate(clock, spe, warmup // spe)


# ---------------------------------------------------------------------------------- start-up
def gan_command() -> list[str]:
    script = Path(sys.executable).with_name("gan")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gan_cli.cli.main"]


def startup_time(case: str, overrides: list[str], flags: list[str]) -> tuple[float, float]:
    """(seconds to the start-up line naming the device, seconds until the first training step is done) of
    ``gan train`` started as a subprocess, with ``train.steps_per_execution=1`` so that its progress bar
    moves after the first step (tracing included)."""
    total = 2
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [*gan_command(), "train", *CASES[case][0], *overrides, "train.steps_per_execution=1",
               f"train.steps={total}", f"train.eval_every={total}", f"train.checkpoint_every={total}",
               "metrics.num_samples=200", "train.report=false", *flags, f"hydra.run.dir={run_dir}"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=run_dir)
        text, t_device, t_first = "", math.nan, math.nan
        while True:
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            text += chunk.decode(errors="replace")
            now = time.perf_counter() - t0
            if math.isnan(t_device) and "device " in text:
                t_device = now
            if math.isnan(t_first) and re.search(r"\|\s*[1-9]\d*/\d+", text):  # tqdm "| 1/2": a step done
                t_first = now
        if proc.wait() != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{text[-2000:]}")
    return t_device, t_first


# ---------------------------------------------------------------------------------- FLOPs
def _fused_macs(layer) -> tuple[int, int]:
    """Forward MACs per sample of a ConvLeakyMaxPool layer's (first, last) convolution (first: 0 without one)."""
    from gan_cli.fast.conv_max_pool import pooled_positions

    size = tuple(int(d) for d in layer.input.shape[1:-1])
    first = 0
    if layer.first_filters is not None:
        first = int(np.prod(layer.first_kernel.shape)) * pooled_positions(size, 1, layer.strides)
    convs = 1 if layer.first_filters is None else 2
    return first, int(np.prod(layer.kernel.shape)) * pooled_positions(size, convs, layer.strides)


def layer_macs(layer) -> int:
    """Multiply-accumulates of one forward pass of one sample through a Dense/Conv layer:
    ``prod(kernel.shape) * prod(output spatial dims)`` (Dense: ``in * out``; Conv2D and the fused
    ConvLeakyMaxPool: ``H_out * W_out * k * k * C_in * C_out`` per convolution); 0 for layers without a kernel."""
    from gan_cli.fast.conv_max_pool import ConvLeakyMaxPool

    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0
    if isinstance(layer, ConvLeakyMaxPool):  # its output is pooled: count its convolutions' outputs
        return sum(_fused_macs(layer))
    spatial = layer.output.shape[1:-1]
    return int(np.prod(kernel.shape)) * int(np.prod(spatial) if len(spatial) else 1)


def model_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass of one sample through the Dense/Conv layers of ``model``."""
    return sum(layer_macs(layer) for layer in model.layers)


def sparse_backward_macs(model: keras.Model) -> int:
    """Backward multiply-accumulates per sample that ``model``'s ConvLeakyMaxPool layers save in a critic
    update (whose inputs need no gradient) against autodiff of the same layers.

    One convolution: its kernel gradient (as many MACs as its forward pass; the gather-based one,
    ``k * k * C * F``, is negligible). Two: the last one's kernel and input gradients and the first one's
    kernel gradient, less the products that give the first kernel's gradient from the pooled windows
    (``F * k * k * C1 * (k0 * k0 * C0 + 1)``)."""
    from gan_cli.fast.conv_max_pool import ConvLeakyMaxPool

    saved = 0
    for layer in model.layers:
        if not isinstance(layer, ConvLeakyMaxPool):
            continue
        first, last = _fused_macs(layer)
        if layer.first_filters is None:
            saved += last
            continue
        k, c1, f = int(layer.kernel.shape[0]), int(layer.kernel.shape[2]), int(layer.kernel.shape[3])
        taps = int(np.prod(layer.first_kernel.shape[:3]))
        saved += 2 * last + first - f * k * k * c1 * (taps + 1)
    return saved


def round_flops(g_macs: int, d_macs: int, batch: int, n_critic: int, d_sparse_macs: int = 0) -> float:
    """FLOPs of one WGAN round (weight clipping; 2 FLOPs per MAC).

    Per MAC and sample: forward 2, backward 4 (2 for the input gradient, 2 for the weight gradient).
    Critic update: G forward on B noise vectors (2 B G), D forward + backward on B real and B fake
    samples (6 * 2B * D). Generator update: G forward + backward (6 B G), D forward + input gradient
    only (4 B D). Round = n_critic critic updates + 1 generator update. ``d_sparse_macs``: the backward
    MACs per sample a critic update does not run (``sparse_backward_macs``: ConvLeakyMaxPool's), so it
    skips ``2 * 2B * d_sparse_macs`` FLOPs. (Elementwise ops, gathers, the optimizer and clipping are not
    counted; the gradient penalty's double backward is not modelled.)
    """
    critic = 2 * batch * g_macs + 12 * batch * d_macs - 4 * batch * d_sparse_macs
    generator = 6 * batch * g_macs + 4 * batch * d_macs
    return float(n_critic * critic + generator)


def matmul_flops(dtype=tf.float32, repeats: int = 5) -> float:
    """The machine's practical float matmul rate (FLOP/s): best of ``repeats`` n x n products."""
    n = 4096 if tf.config.list_physical_devices("GPU") else 2048
    a = tf.random.normal((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)

    @tf.function
    def product(a, b):
        return tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))  # a scalar back: no big copy to host

    product(a, b).numpy()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        product(a, b).numpy()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


# ---------------------------------------------------------------------------------- report
def device_line() -> str:
    """The GPUs as ``gan train``'s start-up line names them, else the CPU model and the usable cores."""
    from gan_cli.training.build import device_line as gan_device_line

    if tf.config.list_physical_devices("GPU"):
        return gan_device_line()
    return f"CPU {cpu_model()}, {usable_cores()} of {os.cpu_count()} cores usable by this process"


def _median(rates: list[float]) -> float:
    """Median of the runs that finished (NaN: a ``--variants`` run that failed); NaN if none did."""
    done = [r for r in rates if not math.isnan(r)]
    return statistics.median(done) if done else math.nan


def _fmt(rates: list[float]) -> str:
    done = [r for r in rates if not math.isnan(r)]
    if not done:
        return "failed"
    med = statistics.median(done)
    digits = 1 if med >= 10 else 2
    if len(rates) == 1:
        return f"{med:.{digits}f}"
    failed = " (some failed)" if len(done) < len(rates) else ""
    return f"{med:.{digits}f} ({min(done):.{digits}f}-{max(done):.{digits}f}){failed}"


def _ratio(value: float, fmt: str = "{:.2f}x") -> str:
    return "failed" if math.isnan(value) else fmt.format(value)


# side -> (label in the tables, TF_ENABLE_ONEDNN_OPTS for its process: None = as in the caller's environment)
SIDES = {
    "ref": ("reference", None),               # TensorFlow's defaults, as a user's own script gets them
    "gan": ("gan train", "gan"),              # the `gan` command's environment (gan_cli/cli/main.py)
    "ref_onednn": ("reference, oneDNN on", "1"),
}


def side_label(side: str) -> str:
    """A side's name in the tables; ``gan:VARIANT`` (one of several ``--variants``) -> ``gan train VARIANT``."""
    kind, _, variant = side.partition(":")
    return f"{SIDES[kind][0]} {variant}".strip()


def side_env(side: str) -> dict[str, str]:
    """The environment of a worker process: the caller's, and for ``gan`` also what ``gan`` itself sets."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if _CALLER_ONEDNN is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = _CALLER_ONEDNN
    mode = SIDES[side.partition(":")[0]][1]
    if mode == "gan":
        env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # gan_cli/cli/main.py: os.environ.setdefault
    elif mode is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = mode
    return env


def worker(args) -> dict:
    """One timed run of one side (``--worker ref|gan|ref_onednn``) or the matmul rate (``--worker matmul``)."""
    info = {"device": device_line(), "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow default")}
    if args.worker == "matmul":
        info["matmul"] = matmul_flops()
        if args.mixed_precision:  # the rate of the type train.mixed_precision=true computes in here
            from gan_cli.training.precision import compute_dtype

            info["half_dtype"] = compute_dtype(True)
            info["matmul_half"] = matmul_flops(getattr(tf, info["half_dtype"]))
        return info
    case = args.cases[0]
    steps = case_steps(case, args.steps)
    cfg, resolved, data, warmup, steps, spe = case_config(case, steps, args)
    info.update(steps=steps, spe=spe, batch=int(resolved.train.batch_size), n_critic=int(resolved.train.n_critic),
                loss=str(resolved.loss.name))
    if args.worker == "gan":
        info["rate"] = run_gan(cfg, warmup, spe)
        info["sparse_macs"] = gan_sparse_macs(resolved, data)
    else:
        info["rate"], info["macs"] = run_reference(resolved, data, warmup, steps)
    return info


def worker_command(side: str, case: str | None, argv: list[str], task: str | None = None) -> list[str]:
    """The command line of one worker: ``--worker`` ``task`` (default: ``side``'s kind) with ``argv``; a
    ``gan:VARIANT`` side runs ``--worker gan`` with that variant's flags added."""
    kind, _, variant = side.partition(":")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", task or kind, *argv,
           *(variant_argv(variant) if variant else [])]
    return cmd + (["--cases", case] if case is not None else [])


def run_worker(side: str, case: str | None, argv: list[str], task: str | None = None) -> dict:
    """Run ``worker`` (``task``: default ``side``, or ``matmul``) in a fresh process with ``side``'s
    environment; its result dict."""
    cmd = worker_command(side, case, argv, task)
    proc = subprocess.run(cmd, env=side_env(side), capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side and case (median reported)")
    p.add_argument("--steps", nargs="+", default=None, metavar="[CASE=]N",
                   help="timed generator steps per run: N for every case and/or CASE=N for one, e.g. "
                        "--steps 1000 csm=200 (default per case: ring 1000, ring_gp 500, csm 20, csm_gp 10)")
    p.add_argument("--jit", nargs="?", const="true", default="auto", choices=["auto", "true", "false"],
                   help="gan train's train.jit_compile (XLA): --jit = true; default auto (gan train's default: "
                        "on a GPU, off on a CPU)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="gan train with train.mixed_precision=true (float16 on a GPU, bfloat16 on a CPU)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                   help="time several gan train configurations against the same reference runs, e.g. "
                        "--variants fp32 mixed xla mixed+xla (default: gan train's defaults; fp32/mixed: "
                        "XLA off; overrides --jit / --mixed-precision)")
    p.add_argument("--overrides", nargs="*", default=[],
                   help="extra Hydra overrides (data, model and optimizer settings reach both sides; train.* only "
                        "gan train), e.g. train.steps_per_execution=50")
    p.add_argument("--reference-onednn", action="store_true",
                   help="also time the reference with TF_ENABLE_ONEDNN_OPTS=1 (the part of the gain that setting gives)")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up (command to first step) timing")
    p.add_argument("--out", type=Path, default=None, help="also write the tables as Markdown to this file")
    p.add_argument("--worker", choices=[*SIDES, "matmul"], help=argparse.SUPPRESS)  # internal: one timed run
    p.add_argument("--whole-process", action="store_true",
                   help="time whole processes instead (benchmarks/whole_process.py): `gan train experiment=bench_ring` "
                        "against benchmarks/keras_io_ring.py, phase by phase; --overrides go to gan train only")
    p.add_argument("--whole-steps", nargs="+", type=int, default=[2000, 10000], metavar="N",
                   help="--whole-process: steps per run (default 2000 10000)")
    p.add_argument("--sweep-jobs", type=int, default=0, metavar="K",
                   help="--whole-process: also time a joblib sweep of K short jobs (the per-job overhead)")
    p.add_argument("--sweep-steps", type=int, default=200, help="--whole-process: steps per sweep job (default 200)")
    p.add_argument("--busy-processes", type=int, default=0, metavar="K",
                   help="--whole-process: keep K busy-looping processes running meanwhile (a machine shared "
                        "with other jobs)")
    args = p.parse_args(argv)
    if args.whole_process:
        from whole_process import main as whole_process

        return whole_process(args, "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    try:
        parse_steps(args.steps)
    except ValueError as e:
        p.error(str(e))
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0

    raw = list(argv if argv is not None else sys.argv[1:])
    # variant name -> (jit, mixed); without --variants one unnamed variant from --jit / --mixed-precision
    settings = ({v: VARIANTS[v] for v in args.variants} if args.variants
                else {"": (args.jit, args.mixed_precision)})
    variants = list(settings)
    # one variant: the side "gan" with the flags in every worker's argv; several: a side "gan:VARIANT" each
    gans = ["gan"] if len(variants) == 1 else [f"gan:{v}" for v in variants]
    passed = ((["--steps", *args.steps] if args.steps is not None else [])
              + (worker_flags(*settings[variants[0]]) if len(variants) == 1 else [])
              + (["--overrides", *args.overrides] if args.overrides else []))  # what each worker needs
    sides = ["ref", *gans] + (["ref_onednn"] if args.reference_onednn else [])
    command = "python benchmarks/throughput.py " + " ".join(raw)
    half_flag = ["--mixed-precision"] if len(variants) > 1 and any(m for _, m in settings.values()) else []
    peaks = {side: run_worker(side, None, passed + (half_flag if side == "gan" else []), task="matmul")
             for side in ("ref", "gan")}
    flags = {v: gan_flags(*settings[v]) for v in variants}
    gan_line = ("; ".join(f"{v}: {', '.join(flags[v])}" for v in variants) if len(variants) > 1
                else ", ".join(flags[variants[0]]))
    head = [f"device: {peaks['gan']['device']}; TensorFlow {tf.__version__}, Keras {keras.__version__}; "
            f"load average at start {os.getloadavg()[0]:.2f}",
            f"gan train: {gan_line}{', ' if args.overrides else ''}{', '.join(args.overrides)}, TF_ENABLE_ONEDNN_OPTS="
            f"{peaks['gan']['onednn']}; reference: float32, Keras default compile (steps_per_execution=1, "
            f"jit_compile=auto), TF_ENABLE_ONEDNN_OPTS={peaks['ref']['onednn']}",
            "each timed run in its own process with its side's environment"]
    print("\n".join(head), flush=True)

    results: dict[str, dict] = {}
    for case in args.cases:
        runs: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
        info: dict[str, dict] = {}
        for r in range(args.repeats):
            for side in (sides if r % 2 == 0 else sides[::-1]):
                try:
                    info[side] = run_worker(side, case, passed)
                except RuntimeError as err:  # one failing variant of several: report it, time the others
                    if len(gans) == 1 or side not in gans:
                        raise
                    print(f"  {case}: {side_label(side)} failed: {str(err)[-1500:]}", flush=True)
                    runs[side].append((math.nan, math.nan))
                    continue
                runs[side].append(tuple(info[side]["rate"]))
            print(f"  {case} repeat {r + 1}: steps/s (per CPU-s) "
                  + ", ".join(f"{side_label(side)} {runs[side][-1][0]:.3g} ({runs[side][-1][1]:.3g})"
                              for side in sides), flush=True)
        ref = info["ref"]
        if not any(g in info for g in gans):
            raise RuntimeError(f"{case}: every gan train variant failed")
        shape = (ref["batch"], ref["n_critic"])
        results[case] = dict(steps=ref["steps"], batch=ref["batch"],
                             flops=round_flops(*ref["macs"], *shape) if ref["loss"] == "wgan" else None,
                             gan_flops={g: round_flops(*ref["macs"], *shape, d_sparse_macs=info[g]["sparse_macs"])
                                        for g in gans if g in info},
                             **{f"{side}_{kind}": [rate[k] for rate in runs[side]]
                                for side in runs for k, kind in enumerate(("wall", "cpu"))})

    extra = "ref_onednn" in sides
    labels = {g: side_label(g) for g in gans}
    cells = (["reference steps/s", *(c for g in gans for c in (f"{labels[g]} steps/s", "**ratio**"))]
             + ["reference steps/CPU-s", *(c for g in gans for c in (f"{labels[g]} steps/CPU-s", "ratio per CPU-s"))]
             + (["reference with oneDNN steps/s", *(f"{labels[g]} / it" for g in gans)] if extra else []))
    lines = [f"Command: `{command}`", "", *[f"- {h}" for h in head], "",
             "| case | loss | batch | timed steps x repeats | " + " | ".join(cells) + " |",
             "|" + "---|" * (4 + len(cells))]
    for case, res in results.items():
        med = {k: _median(v) for k, v in res.items() if k.endswith(("_wall", "_cpu"))}
        loss = "wgan_gp" if case.endswith("_gp") else "wgan (clip)"
        name, repeats = case.replace("_gp", ""), len(res["ref_wall"])
        row = [name, loss, res["batch"], f"{res['steps']} x {repeats}", _fmt(res["ref_wall"])]
        row += [c for g in gans
                for c in (_fmt(res[f"{g}_wall"]), _ratio(med[f"{g}_wall"] / med["ref_wall"], "**{:.2f}x**"))]
        row += [_fmt(res["ref_cpu"])]
        row += [c for g in gans for c in (_fmt(res[f"{g}_cpu"]), _ratio(med[f"{g}_cpu"] / med["ref_cpu"]))]
        if extra:
            row += [_fmt(res["ref_onednn_wall"]), *(_ratio(med[f"{g}_wall"] / med["ref_onednn_wall"]) for g in gans)]
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    lines.append("")
    lines.append("Generator steps/s: median (min-max) over the repeats, steady state (the first `gan train` compiled "
                 "call's worth of steps dropped on both sides); steps/CPU-s: the same steps over the process's CPU "
                 "time (all threads), which other load on the machine hardly changes.")

    flop_cases = {c: r for c, r in results.items() if r["flops"]}
    if flop_cases:
        peak = max(side["matmul"] for side in peaks.values())
        rates = ", ".join(f"{peaks[s]['matmul'] / 1e9:.1f} with TF_ENABLE_ONEDNN_OPTS={peaks[s]['onednn']}"
                          for s in peaks)
        half_peak = peaks["gan"].get("matmul_half")
        half = f"; {peaks['gan']['half_dtype']}: {half_peak / 1e9:.1f} GFLOP/s" if half_peak else ""
        # a mixed-precision variant is measured against the half-precision matmul rate
        mixed = {g: settings[g.partition(":")[2] or variants[0]][1] for g in gans}
        peak_of = {g: half_peak if mixed[g] and half_peak else peak for g in gans}
        lines += ["", f"Achieved FLOP/s (matmul/conv FLOPs per round from layer shapes, `round_flops`) against the "
                  f"best measured float32 matmul rate of this device, {peak / 1e9:.1f} GFLOP/s ({rates}{half}"
                  f"{'; mixed-precision variants against the latter' if half else ''}). "
                  "`gan train` executes fewer FLOPs per round where its critic has the fused conv + max-pool layer "
                  "(its kernel gradient touches only the pooled positions); its rate is counted with its own FLOPs:",
                  "", "| case | reference GFLOP per round | gan train GFLOP per round | reference GFLOP/s | "
                  + "".join(f"{labels[g]} GFLOP/s | " for g in gans) + "reference / matmul rate | "
                  + "".join(f"{labels[g]} / matmul rate | " for g in gans).rstrip(),
                  "|" + "---|" * (5 + 2 * len(gans))]
        for case, res in flop_cases.items():
            ref_f = res["flops"] * statistics.median(res["ref_wall"])
            gan_f = [res["gan_flops"].get(g, math.nan) * _median(res[f"{g}_wall"]) for g in gans]
            per_round = {}  # GFLOP per round -> the variants that execute it (XLA: the dense backward pass)
            for g, f in res["gan_flops"].items():
                per_round.setdefault(f"{f / 1e9:.3g}", []).append(g.partition(":")[2])
            own = ", ".join(f"{f} ({', '.join(v)})" if len(per_round) > 1 else f for f, v in per_round.items())
            lines.append(f"| {case} | {res['flops'] / 1e9:.3g} | {own} | {ref_f / 1e9:.1f} | "
                         + "".join(f"{_ratio(f / 1e9, '{:.1f}')} | " for f in gan_f) + f"{ref_f / peak:.0%} | "
                         + "".join(f"{_ratio(f / peak_of[g], '{:.0%}')} | " for g, f in zip(gans, gan_f)).rstrip())

    if not args.no_startup:
        lines += ["", "`gan train experiment=bench_...` started as a subprocess (with `train.steps_per_execution=1`, "
                  "so its progress bar moves after one step): seconds from the command to its start-up line (data "
                  "loaded, networks built, device named) and to the end of its first training step (tracing "
                  f"included){f'; gan train {variants[0]}' if len(variants) > 1 else ''}:",
                  "", "| case | to start-up line (s) | to first step done (s) |", "|---|---|---|"]
        for case in dict.fromkeys(c.replace("_gp", "") for c in args.cases):
            t_dev, t_first = startup_time(case, args.overrides, flags[variants[0]])
            lines.append(f"| {case} | {t_dev:.1f} | {t_first:.1f} |")

    report = "\n".join(lines)
    print("\n" + report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
