"""Per-evaluation extras for the report's GAN Lab views of 2D data (Kahng et al. 2018)."""

from __future__ import annotations

import numpy as np

SNAPSHOT_GRID = 60      # cells per axis of the discriminator heat map
MANIFOLD_GRID = 21      # noise-space grid points per axis pushed through G


def snapshot_extras(data, gan, fake: np.ndarray) -> dict[str, np.ndarray]:
    """The extras ``samples/step_XXXXXXXX.npz`` keeps for ``data`` (empty for data other than 2D toy sets)."""
    if getattr(data, "kind", None) != "toy2d":
        return {}
    return toy2d_extras(data, gan, fake)


def toy2d_extras(data, gan, fake: np.ndarray) -> dict[str, np.ndarray]:
    """What the report draws at every evaluation (saved in ``samples/step_XXXXXXXX.npz``).

    * ``d_logits`` ``(60, 60)`` float32: the discriminator's raw output (logits) on a grid over
      ``bounds()``; row ``i`` is y = ``d_grid_y[i]``, column ``j`` is x = ``d_grid_x[j]``.
    * ``d_grid_x``, ``d_grid_y`` ``(60,)``: the grid's coordinates.
    * ``manifold`` ``(21, 21, 2)``: G applied to a 21 x 21 grid over noise dimensions 0 and 1
      (+-2 for Gaussian noise, +-1 for uniform), the other noise dimensions 0 (a 2D slice).
    * ``fake_grad`` ``(n, 2)``: the gradient of the generator loss with respect to each fake
      sample (``fake``); a generator step moves the samples along ``-fake_grad``.

    Unconditional models only (toy2d has no labels); a few milliseconds per call.
    """
    import tensorflow as tf

    if getattr(gan, "conditional", False):
        return {}
    xmin, xmax, ymin, ymax = data.bounds()
    k = SNAPSHOT_GRID
    gx = np.linspace(xmin, xmax, k, dtype=np.float32)
    gy = np.linspace(ymin, ymax, k, dtype=np.float32)
    xx, yy = np.meshgrid(gx, gy)                      # (k, k): row = y, column = x
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
    logits = np.asarray(gan.critic(tf.constant(grid), training=False), np.float32).reshape(k, k)

    m = MANIFOLD_GRID
    span = 1.0 if gan.latent_distribution == "uniform" else 2.0
    u = np.linspace(-span, span, m, dtype=np.float32)
    uu, vv = np.meshgrid(u, u)
    z = np.zeros((m * m, int(gan.latent_dim)), np.float32)
    z[:, 0] = uu.ravel()
    if gan.latent_dim > 1:
        z[:, 1] = vv.ravel()
    manifold = np.asarray(gan.generate(tf.constant(z), training=False), np.float32).reshape(m, m, 2)

    x = tf.constant(np.asarray(fake, np.float32).reshape(-1, 2))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = gan.loss_pair.generator(gan.critic(x, training=False), **gan.loss_params)
    grad = tape.gradient(loss, x)
    grad = np.zeros_like(x.numpy()) if grad is None else np.asarray(grad, np.float32)
    return {"d_logits": logits, "d_grid_x": gx, "d_grid_y": gy, "manifold": manifold, "fake_grad": grad}
