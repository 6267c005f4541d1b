"""GN-GAN objectives (Tran, Bui & Cheung 2018, "Improving GAN with neighbors embedding and gradient
matching") as pure functions of tensors.

Notation (Tran, Bui & Cheung 2018): E encoder, G generator (= the auto-encoder's decoder), D(x) = sigmoid(logit) the
discriminator's probability, n the number of points in a batch.

* Auto-encoder, Eqn. 1:  V_AE(E, G) = ||x - G(E(x))||^2 + lambda_r V_R(E, G)            -> ``autoencoder_loss``
* Neighbours embedding:  V_R = sum_i sum_j p_ij log(p_ij / q_ij)                          -> ``neighbors_embedding``
      p_ij = (p_i|j + p_j|i) / 2n,  q_ij = (q_i|j + q_j|i) / 2n,
      p_j|i = (1 + ||z_j - z_i||^2 / 2 sigma_z^2)^-1 / sum_{k != i} (1 + ||z_k - z_i||^2 / 2 sigma_z^2)^-1,
      q_j|i = the same with G(z_j), G(z_i) and sigma_x.
* Discriminator, Eqn. 7 (maximised):
      V_D = (1 - alpha) E_x log D(x) + alpha V_C + E_z log(1 - D(G(z))) - lambda_p V_P,
      V_C = E_x log D(G(E(x)))  (reconstructions counted as real)    -> ``discriminator_loss`` (= -V_D)
      V_P: penalty on interpolates x_hat = e x + (1 - e) G(z), e ~ U[0, 1]                  -> ``interpolate_penalty``
* Generator, Eqn. 13 (minimised):                                                         -> ``gradient_matching``
      V_G = |E_x D(x) - E_z D(G(z))|
            + lambda_m^1 ||E_x grad_x D(x) - E_z grad_x D(G(z))||^2
            + lambda_m^2 (E_x grad_x D(x)^T x - E_z grad_x D(G(z))^T G(z))^2

Choices the seed leaves open (documented in docs/techniques.md):
* V_P follows the authors' code (github.com/tntrung/gan): (RMS of grad_x_hat logit - 1)^2, the RMS being
  ||grad||_2 / sqrt(d) over the d data dimensions.
* In V_G, D is the probability sigmoid(logit) in all three terms (the authors' code matches
  E sigmoid(logit); the gradient terms come from a Taylor expansion of that same D).
* ||x - G(E(x))||^2 is the squared Euclidean norm per sample (summed over every data dimension),
  averaged over the batch.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf


def _flat(x: tf.Tensor) -> tf.Tensor:
    """``(n, *shape)`` -> ``(n, d)``."""
    return tf.reshape(x, [tf.shape(x)[0], -1])


def student_t_conditional(points: tf.Tensor, sigma: float) -> tf.Tensor:
    """Matrix ``P`` ``(n, n)`` with ``P[i, j] = p_j|i`` for ``points`` ``(n, *shape)``; ``P[i, i] = 0``.

    p_j|i = (1 + ||x_j - x_i||^2 / 2 sigma^2)^-1 / sum_{k != i} (1 + ||x_k - x_i||^2 / 2 sigma^2)^-1.
    """
    x = _flat(points)
    sq = tf.reduce_sum(tf.square(x), axis=1)
    # ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b (no (n, n, d) tensor for image-sized d); clamp rounding below 0
    d2 = tf.maximum(sq[:, None] + sq[None, :] - 2.0 * tf.matmul(x, x, transpose_b=True), 0.0)
    kernel = 1.0 / (1.0 + d2 / (2.0 * sigma ** 2))
    kernel = kernel * (1.0 - tf.eye(tf.shape(x)[0], dtype=x.dtype))  # k != i
    return kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)


def joint_from_conditional(cond: tf.Tensor) -> tf.Tensor:
    """``p_ij = (p_i|j + p_j|i) / 2n`` from ``cond[i, j] = p_j|i``; sums to 1 over all (i, j)."""
    n = tf.cast(tf.shape(cond)[0], cond.dtype)
    return (cond + tf.transpose(cond)) / (2.0 * n)


def neighbors_embedding(z: tf.Tensor, gz: tf.Tensor, sigma_z: float = 1.0, sigma_x: float = 1.0) -> tf.Tensor:
    """V_R = sum_{i != j} p_ij log(p_ij / q_ij): KL from the latent neighbour structure ``p`` (of ``z``
    ``(n, latent_dim)``) to the data-space structure ``q`` (of ``gz = G(z)`` ``(n, *shape)``). Scalar >= 0.
    The diagonal terms are 0 (p_ii = 0) and left out of the sum."""
    p = joint_from_conditional(student_t_conditional(z, sigma_z))
    q = joint_from_conditional(student_t_conditional(gz, sigma_x))
    off = 1.0 - tf.eye(tf.shape(p)[0], dtype=p.dtype)
    tiny = 1e-12  # p, q > 0 off the diagonal (Student-t kernels never vanish); guards float underflow only
    return tf.reduce_sum(off * p * (tf.math.log(p + tiny) - tf.math.log(q + tiny)))


def reconstruction_error(x: tf.Tensor, x_rec: tf.Tensor) -> tf.Tensor:
    """E_x ||x - G(E(x))||^2: squared Euclidean norm per sample (all data dimensions), batch mean."""
    return tf.reduce_mean(tf.reduce_sum(tf.square(_flat(x) - _flat(x_rec)), axis=1))


def autoencoder_loss(x, x_rec, z, gz, lambda_r: float = 1.0, sigma_z: float = 1.0, sigma_x: float = 1.0):
    """V_AE = ||x - G(E(x))||^2 + lambda_r V_R (Eqn. 1), minimised over E and G."""
    return reconstruction_error(x, x_rec) + lambda_r * neighbors_embedding(z, gz, sigma_z, sigma_x)


def reconstruction_term(recon_logits: tf.Tensor) -> tf.Tensor:
    """V_C = E_x log D(G(E(x))) with D = sigmoid(logit) (log sigmoid(l) = -softplus(-l))."""
    return -tf.reduce_mean(tf.nn.softplus(-recon_logits))


def discriminator_objective(real_logits, recon_logits, fake_logits, alpha: float = 0.05) -> tf.Tensor:
    """V_D without the penalty: (1 - alpha) E log D(x) + alpha V_C + E log(1 - D(G(z)))."""
    log_d_real = -tf.reduce_mean(tf.nn.softplus(-real_logits))
    log_one_minus_d_fake = -tf.reduce_mean(tf.nn.softplus(fake_logits))
    return (1.0 - alpha) * log_d_real + alpha * reconstruction_term(recon_logits) + log_one_minus_d_fake


def discriminator_loss(real_logits, recon_logits, fake_logits, penalty=0.0, alpha: float = 0.05,
                       lambda_p: float = 1.0, **_) -> tf.Tensor:
    """-V_D = -[(1 - alpha) E log D(x) + alpha V_C + E log(1 - D(G(z))) - lambda_p V_P] (minimised by D)."""
    return -discriminator_objective(real_logits, recon_logits, fake_logits, alpha) + lambda_p * penalty


def interpolate_penalty(critic: Callable[[tf.Tensor], tf.Tensor], real: tf.Tensor, fake: tf.Tensor,
                        epsilon: tf.Tensor) -> tf.Tensor:
    """V_P = E (||grad_x_hat logit(x_hat)||_2 / sqrt(d) - 1)^2, x_hat = e x + (1 - e) G(z).

    ``real``, ``fake`` ``(B, *shape)``, ``epsilon`` ``(B,)`` from U[0, 1]; d = prod(shape). The 1/sqrt(d)
    (an RMS over the data dimensions) follows the authors' code; the 1e-12 keeps sqrt's gradient finite.
    """
    e = tf.reshape(epsilon, [-1] + [1] * (len(real.shape) - 1))
    x_hat = e * real + (1.0 - e) * fake
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        out = critic(x_hat)
    grads = _flat(tape.gradient(out, x_hat))
    rms = tf.sqrt(tf.reduce_mean(tf.square(grads), axis=1) + 1e-12)
    return tf.reduce_mean(tf.square(rms - 1.0))


def gradient_matching(d_real, d_fake, grad_real, grad_fake, real, fake, lambda_m1: float = 1.0,
                      lambda_m2: float = 1.0) -> tf.Tensor:
    """V_G (Eqn. 13) from D's probabilities ``d_real``, ``d_fake`` ``(B, 1)``, their input gradients
    ``grad_real``, ``grad_fake`` ``(B, *shape)`` and the samples ``real``, ``fake`` ``(B, *shape)``.

    |E D(x) - E D(G(z))| + lambda_m1 ||E grad D(x) - E grad D(G(z))||_2^2
    + lambda_m2 (E grad D(x)^T x - E grad D(G(z))^T G(z))^2.
    """
    score = tf.abs(tf.reduce_mean(d_real) - tf.reduce_mean(d_fake))
    gr, gf = _flat(grad_real), _flat(grad_fake)
    first = tf.reduce_sum(tf.square(tf.reduce_mean(gr, axis=0) - tf.reduce_mean(gf, axis=0)))
    dot_real = tf.reduce_mean(tf.reduce_sum(gr * _flat(real), axis=1))
    dot_fake = tf.reduce_mean(tf.reduce_sum(gf * _flat(fake), axis=1))
    second = tf.square(dot_real - dot_fake)
    return score + lambda_m1 * first + lambda_m2 * second


def probability_and_gradient(critic: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor):
    """D(x) = sigmoid(critic(x)) ``(B, 1)`` and grad_x D(x) ``(B, *shape)`` (per sample: D acts row by row).

    Differentiable with respect to ``x`` and the critic's weights when called under an outer tape
    (the generator step differentiates grad_x D(G(z)) with respect to G's weights)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        d = tf.sigmoid(tf.cast(critic(x), tf.float32))
    return d, tape.gradient(d, x)


# ---- registry entries (the GNGAN class calls the functions above directly) -------------------------

def gngan_discriminator_loss(real_logits, fake_logits, recon_logits=None, alpha: float = 0.05, **_):
    """-V_D without the penalty; without reconstructions (``recon_logits`` None) V_C is left out."""
    if recon_logits is None:
        recon_logits = real_logits  # alpha then only reweights the real term: (1 - alpha) + alpha = 1
    return -discriminator_objective(real_logits, recon_logits, fake_logits, alpha)


def gngan_generator_loss(fake_logits, real_logits=None, **_):
    """The score term of V_G, |E D(x) - E D(G(z))|; the GNGAN class adds the gradient terms."""
    if real_logits is None:
        return -tf.reduce_mean(tf.sigmoid(fake_logits))
    return tf.abs(tf.reduce_mean(tf.sigmoid(real_logits)) - tf.reduce_mean(tf.sigmoid(fake_logits)))
