"""The interface every training set implements.

A dataset lives in *model space*: float32 arrays of shape ``(N, *sample_shape)``
exactly as the discriminator sees them and the generator produces them.
``to_user_space`` maps model space back to what a user expects (pixel range,
complex CSMs, ...).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable

import numpy as np

# An evaluator maps generated samples (model space, (n, *sample_shape)) and their
# conditioning labels ((n,) int or None) to a flat dict of float quality metrics.
Evaluator = Callable[[np.ndarray, "np.ndarray | None"], dict]

# The real-batch pipelines run with fixed parallelism and tf.data's autotuning off (``fixed_pipeline``).
# Each element is one training round's batches, drawn in a fraction of the time the round takes to
# train, so two calls in flight and two rounds buffered keep the step fed.
PARALLEL_CALLS = 2
PREFETCH = 2


def fixed_pipeline(dataset):
    """``dataset`` with tf.data's autotuning off.

    With autotuning on, every iterator runs a model thread that re-optimises the pipeline at
    doubling intervals (up to a minute), and deleting the iterator waits for that thread, so the
    end of each ``fit`` could sit idle for up to the current interval (docs/performance.md). These
    pipelines only draw or slice batches: they have nothing to tune."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class GanDataset(abc.ABC):
    """A training set for a GAN.

    Attributes:
        name: the config name (``ring``, ``csm``, ``digits`` ...).
        kind: ``"toy2d"``, ``"image"`` or ``"csm"``; selects the default model,
            report sections and metrics.
        sample_shape: shape of one sample, e.g. ``(2,)``, ``(8, 8, 1)``, ``(64, 64, 2)``.
        num_classes: number of label classes, 0 when the data has no labels.
        primary_metric: the metric shown in the progress bar (lower or higher is
            better as documented by the metric).
    """

    name: str = "dataset"
    kind: str = "toy2d"
    sample_shape: tuple[int, ...] = (2,)
    num_classes: int = 0
    primary_metric: str = ""
    # Recommended settings used when the config says ``model=auto`` / ``latent.dim=null``.
    default_model: str = "mlp"
    default_latent_dim: int = 2
    # Run length for ``train.steps`` / ``batch_size`` / ``eval_every`` / ``checkpoint_every`` = null, and the
    # rounds per compiled call for ``train.steps_per_execution`` = null.
    default_train: dict[str, int] = {"steps": 2000, "batch_size": 256, "eval_every": 500, "checkpoint_every": 1000,
                                     "steps_per_execution": 10}

    def prepare(self) -> None:
        """Load or build the data now. ``train`` calls it before any network exists, so a slow first
        build (a simulated set) runs without TensorFlow's thread pools competing for the CPU."""

    @abc.abstractmethod
    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """All training samples, float32 ``(N, *sample_shape)``, and labels ``(N,)`` int32 or None."""

    def tf_dataset(self, batch_size: int, seed: int, start_step: int = 0,
                   batches_per_step: int = 1):
        """An infinite ``tf.data.Dataset`` of real batches, deterministic in ``(seed, step)``.

        Element ``s`` (counting from ``start_step``) is ``x`` of shape
        ``(batch_size, batches_per_step, *sample_shape)`` (or ``(x, y)`` with ``y``
        of shape ``(batch_size, batches_per_step)`` when the data is labelled): column
        ``x[:, i]`` is the i-th real batch of the step, and the batch axis comes first so that
        ``tf.distribute`` can split it across replicas.
        Batches are drawn with replacement by a stateless RNG keyed on
        ``(seed, step)``, so resuming at ``start_step`` continues the same stream.
        Datasets too large for memory override this.
        """
        import tensorflow as tf

        x, y = self.arrays()
        n = int(x.shape[0])
        x_t = tf.constant(x, dtype=tf.float32)
        y_t = None if y is None else tf.constant(y, dtype=tf.int32)
        shape = (batches_per_step, batch_size)

        @tf.autograph.experimental.do_not_convert  # plain tensor code: nothing for AutoGraph to convert
        def draw(step):
            idx = tf.random.stateless_uniform(
                shape, seed=tf.stack([tf.cast(seed, tf.int64), step]), minval=0, maxval=n, dtype=tf.int64
            )
            idx = tf.transpose(idx)  # (batch_size, batches_per_step): column i = batch i of the step
            xb = tf.gather(x_t, idx)
            return xb if y_t is None else (xb, tf.gather(y_t, idx))

        ds = tf.data.Dataset.counter(start=start_step).map(draw, num_parallel_calls=PARALLEL_CALLS)
        return fixed_pipeline(ds.prefetch(PREFETCH))

    def real_samples(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``n`` real samples (model space) and their labels, for metrics and reports."""
        x, y = self.arrays()
        rng = np.random.default_rng(seed)
        idx = rng.choice(x.shape[0], size=n, replace=x.shape[0] < n)
        return x[idx], (None if y is None else y[idx])

    def to_user_space(self, x: np.ndarray) -> np.ndarray:
        """Model-space samples -> the form a user expects (default: unchanged)."""
        return x

    def write_samples(self, x: np.ndarray, labels: np.ndarray | None, path: Path) -> None:
        """Write generated samples (model space) to ``path``; ``.npy`` writes ``to_user_space(x)``."""
        from gan_cli.core.errors import UserError

        path = Path(path)
        if path.suffix != ".npy":
            raise UserError(f"cannot write {path.name}: dataset '{self.name}' writes .npy files; use -o FILE.npy")
        np.save(path, self.to_user_space(x))


def data_cache_dir() -> Path:
    """Folder for built-in data sets and cached classifiers (``$GAN_CLI_DATA`` or ``~/.cache/gan-cli``)."""
    import os

    root = os.environ.get("GAN_CLI_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "gan-cli")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
