"""``GAN(keras.Model)``: one training round per ``train_step``, driven by ``Model.fit``.

A round = ``n_critic`` discriminator updates followed by ``n_gen`` generator updates, all
inside one compiled step. Noise, fake labels and gradient-penalty weights come from a
stateless RNG keyed on ``(seed, round, slot)``, and real batches from a stream keyed on
``(seed, round)``, so a run is a deterministic function of its config and resumes exactly
from the round counter stored in its checkpoint.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from gan_cli import fast as fast_mod
from gan_cli.core import streams
from gan_cli.training.distribute import assign_everywhere, replica_rows, replica_share, step_logs
from gan_cli.training.ema import make_ema_generator, update_ema
from gan_cli.losses.adversarial import LossPair, feature_matching_loss, gradient_penalty, r1_penalty
from gan_cli.models.features import feature_model
from gan_cli.models.per_sample import rows_independent
from gan_cli.training.unroll import unrolled_weights



class GAN(keras.Model):
    """Generator + discriminator trained adversarially.

    ``fit`` data: per round, real batches ``x`` of shape ``(B, n_critic, *sample_shape)``
    (and labels ``y`` of shape ``(B, n_critic)`` int32 for conditional models); batch axis first,
    so that ``tf.distribute`` (``train.strategy``, see ``gan_cli.training.distribute``) splits ``B`` across
    replicas.

    PacGAN packing (Lin et al. 2018), ``pack=m > 1``: in training the discriminator sees packs
    of m samples concatenated along the feature axis (``pack_samples``: ``(B, *shape)`` ->
    ``(B/m, m * prod(shape))``, packed row i = samples ``i*m .. i*m+m-1``), for real batches, fake
    batches and gradient-penalty interpolates alike (the penalty interpolates packed rows).
    ``critic(x)`` keeps a per-sample meaning for plots and inspection: logits ``(B, 1)`` of
    packs made of m copies of each sample.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, loss: LossPair,
                 loss_params: dict[str, Any], latent_dim: int, latent_distribution: str = "gaussian",
                 n_critic: int = 1, n_gen: int = 1, clip_value: float | None = None, gp_weight: float = 0.0,
                 seed: int = 0, conditional: bool = False, num_classes: int = 0, pack: int = 1,
                 feature_matching: float = 0.0, feature_matching_only: bool = False, r1_weight: float = 0.0,
                 unroll_steps: int = 0, g_ema: float = 0.0, slot_stride: int | None = None, fast: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.loss_pair, self.loss_params = loss, dict(loss_params)
        self.latent_dim, self.latent_distribution = int(latent_dim), latent_distribution
        self.n_critic, self.n_gen = int(n_critic), int(n_gen)
        self.clip_value = clip_value if loss.clips_weights else None
        self.gp_weight = float(gp_weight) if loss.gradient_penalty else 0.0
        self.seed = int(seed)
        self.conditional, self.num_classes = bool(conditional), int(num_classes)
        self.pack = int(pack)  # >= 1, unconditional when > 1 (checked with the config: gan_cli.config.resolve)
        # one increment per round also under tf.distribute (each replica runs train_step)
        self.round = tf.Variable(0, dtype=tf.int64, trainable=False, name="round",
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self._init_techniques(feature_matching, feature_matching_only, r1_weight, unroll_steps, g_ema, slot_stride)
        # train.fast (gan_cli.fast): one generator call for a round's n_critic fake batches where that gives the
        # same samples and pays (train_step, critic_fakes), and small networks' critic updates unrolled
        self.fast = bool(fast)
        self.batched_fakes = fast_mod.batched_fakes(self.generator.count_params(), rows_independent(self.generator),
                                                    self.fast)
        self.n_params = self.generator.count_params() + self.discriminator.count_params()

    def _init_techniques(self, feature_matching, feature_matching_only, r1_weight, unroll_steps, g_ema, slot_stride):
        """Stabilisation options (docs/techniques.md).

        ``feature_matching`` w > 0 (Salimans et al. 2016): G's loss gains w * ||mean f(x) - mean f(G(z))||^2,
        f = D's ``features`` layer (``feature_matching_only``: it replaces the adversarial G loss);
        ``r1_weight`` gamma: D's loss gains gamma/2 * E ||grad_x D(x)||^2 on real data (Mescheder et al. 2018);
        ``unroll_steps`` k: G's loss is taken through k look-ahead D updates (Metz et al. 2017, gan_cli.training.unroll);
        ``g_ema`` d > 0: a shadow generator averages G's weights and is used for inference (gan_cli.training.ema);
        ``slot_stride``: random slots per round (``schedule.slot_stride``: the largest n_critic + n_gen),
        fixed for a run whose n_critic follows a schedule.
        """
        self.feature_matching, self.feature_matching_only = float(feature_matching), bool(feature_matching_only)
        self.r1_weight, self.unroll_steps, self.g_ema = float(r1_weight), int(unroll_steps), float(g_ema)
        self.slot_stride = int(slot_stride) if slot_stride else self.n_critic + self.n_gen
        self.d_features = feature_model(self.discriminator) if self.feature_matching > 0 else None
        if self.d_features is not None:  # its weights are D's, possibly listed in another order
            index = {id(v): i for i, v in enumerate(self.discriminator.trainable_variables)}
            self._feature_order = [index[id(v)] for v in self.d_features.trainable_variables]
        self.ema_generator = make_ema_generator(self.generator) if self.g_ema > 0 else None

    def compile(self, g_optimizer, d_optimizer, **kwargs):  # noqa: D401 - Keras signature
        """Attach the two optimizers (built eagerly so their slots exist before tracing)."""
        super().compile(**kwargs)
        # G and D are built already and train_step never runs call(); marked built so that Keras'
        # tf.distribute path does not trace call() on a data batch to build the model
        self.built = True
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        g_optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self.discriminator.trainable_variables)

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    # ---- randomness ---------------------------------------------------------------
    def _key(self, purpose: int, slot) -> tf.Tensor:
        return tf.stack([tf.constant(self.seed * streams.STATELESS_PURPOSES + purpose, tf.int64), tf.cast(slot, tf.int64)])

    def latent(self, batch, slot, purpose: int = streams.LATENT) -> tf.Tensor:
        """Noise ``(batch, latent_dim)``: N(0, I) or U[-1, 1], keyed on ``(purpose, slot)`` (under
        tf.distribute: this replica's rows of the global batch's noise, ``distribute.replica_rows``)."""
        def draw(n):
            shape = tf.stack([n, self.latent_dim])
            if self.latent_distribution == "uniform":
                return tf.random.stateless_uniform(shape, self._key(purpose, slot), -1.0, 1.0)
            return tf.random.stateless_normal(shape, self._key(purpose, slot))

        return replica_rows(draw, batch)

    def random_labels(self, batch, slot) -> tf.Tensor:
        return replica_rows(lambda n: tf.random.stateless_uniform(tf.reshape(n, [1]), self._key(streams.LABELS, slot), 0,
                                                                  self.num_classes, dtype=tf.int32), batch)

    def _epsilon(self, batch, slot) -> tf.Tensor:
        """Gradient-penalty interpolation weights ``(batch,)`` from U[0, 1)."""
        return replica_rows(lambda n: tf.random.stateless_uniform(tf.reshape(n, [1]), self._key(streams.GP_EPSILON, slot)), batch)

    # ---- networks -----------------------------------------------------------------
    def generate(self, z, labels=None, training: bool = False):
        """G(z) in training; outside training the EMA generator when ``g_ema`` is on (sampling, evaluation)."""
        net = self.ema_generator if self.ema_generator is not None and not training else self.generator
        return net([z, labels] if self.conditional else z, training=training)

    def pack_samples(self, x) -> tf.Tensor:
        """``(B, *shape)`` -> ``(B/m, m * prod(shape))``: row i = samples ``i*m .. i*m+m-1`` flattened and
        concatenated (``B`` must be a multiple of ``m = self.pack``). Identity when ``pack == 1``."""
        if self.pack == 1:
            return x
        x = tf.convert_to_tensor(x)
        features = int(np.prod(x.shape[1:]))
        return tf.reshape(x, [-1, self.pack * features])

    def critic_packed(self, x, labels=None, training: bool = False):
        """Logits ``(B/m, 1)`` of the packed batch ``x`` ``(B, *shape)`` (the training-time critic)."""
        return self.discriminator(self._d_inputs(x, labels), training=training)

    def critic(self, x, labels=None, training: bool = False):
        """Per-sample logits ``(B, 1)``; with packing, D of a pack of m copies of each sample."""
        if self.pack == 1:
            return self.discriminator([x, labels] if self.conditional else x, training=training)
        x = tf.convert_to_tensor(x)
        flat = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
        return self.discriminator(tf.tile(flat, [1, self.pack]), training=training)

    def call(self, z, training=False):
        return self.generator(z, training=training)

    def _d_inputs(self, x, labels=None, packed: bool = False):
        """D's Keras inputs for samples ``x`` ``(B, *shape)`` (``packed``: ``x`` is already ``(B/m, m * F)``)."""
        if self.pack == 1:
            return [x, labels] if self.conditional else x
        return x if packed else self.pack_samples(x)

    def _run_d(self, inputs, weights=None, features: bool = False):
        """D in training mode on Keras ``inputs``: logits ``(B', 1)``, or ``(features (B', F), logits)``.

        ``weights``: tensors replacing D's trainable weights (``discriminator.trainable_variables`` order),
        for the unrolled look-ahead (the variables keep their values)."""
        net = self.d_features if features else self.discriminator
        if weights is None:
            return net(inputs, training=True)
        if features:
            weights = [weights[i] for i in self._feature_order]
        out, _ = net.stateless_call(weights, [v.value for v in net.non_trainable_variables], inputs, training=True)
        return out

    def discriminator_loss(self, x, y, fake, slot, weights=None):
        """D's objective for real ``x`` and generated ``fake`` ``(B, *shape)`` (labels ``y`` for both).

        The loss family's D loss, plus ``gp_weight`` * the gradient penalty (wgan_gp; with packing on
        interpolated packs) and ``r1_weight``/2 * E ||grad_x D(x)||^2 on the real (packed) batch.
        ``weights``: see ``_run_d``."""
        def d(inputs):
            return self._run_d(inputs, weights)

        d_loss = self.loss_pair.discriminator(d(self._d_inputs(x, y)), d(self._d_inputs(fake, y)),
                                              **self.loss_params)
        real_p = self.pack_samples(x)  # x itself without packing
        if self.gp_weight > 0:  # with packing: one interpolation weight per pack (PacGAN + WGAN-GP)
            eps = self._epsilon(tf.shape(real_p)[0], slot)
            gp = gradient_penalty(lambda t: d(self._d_inputs(t, y, packed=True)), real_p, self.pack_samples(fake), eps)
            d_loss = d_loss + self.gp_weight * gp
        if self.r1_weight > 0:
            r1 = r1_penalty(lambda t: d(self._d_inputs(t, y, packed=True)), real_p)
            d_loss = d_loss + 0.5 * self.r1_weight * r1
        return d_loss

    def generator_loss(self, fake, y, x_real=None, y_real=None, weights=None):
        """G's objective for ``fake`` ``(B, *shape)`` with labels ``y``: the loss family's G loss, plus (or,
        with ``feature_matching_only``, instead) ``feature_matching`` * ||mean f(x_real) - mean f(fake)||^2,
        f = D's ``features`` layer, ``x_real``/``y_real`` a real batch. ``weights``: see ``_run_d``."""
        fake_in = self._d_inputs(fake, y)
        if self.d_features is None:
            return self.loss_pair.generator(self._run_d(fake_in, weights), **self.loss_params)
        fake_features, fake_logits = self._run_d(fake_in, weights, features=True)
        real_features, _ = self._run_d(self._d_inputs(x_real, y_real), weights, features=True)
        g_loss = self.feature_matching * feature_matching_loss(real_features, fake_features)
        if not self.feature_matching_only:
            g_loss = g_loss + self.loss_pair.generator(fake_logits, **self.loss_params)
        return g_loss

    def _unrolled_weights(self, z, fake, x_real, y_real, slot):
        """D's trainable weights after ``unroll_steps`` look-ahead updates on ``x_real`` and ``fake`` (gan_cli.training.unroll)."""
        if self.conditional:  # D's objective pairs real and fake samples under the real labels, as in d_step
            fake = self.generate(z, y_real, training=True)
        return unrolled_weights(lambda w: self.discriminator_loss(x_real, y_real, fake, slot, w),
                                self.discriminator.trainable_variables, self.d_optimizer, self.unroll_steps,
                                self.clip_value)

    # ---- one round ----------------------------------------------------------------
    def critic_fakes(self, batch, y_all, base) -> tf.Tensor:
        """The fake batches of a round's ``n_critic`` D updates, ``(n_critic, B, *shape)``, from one
        generator call on their ``n_critic * B`` noise rows (slots ``base .. base + n_critic - 1``, so the
        same noise as ``d_step`` draws; ``y_all`` ``(B, n_critic)`` labels or None). G does not change
        during the D updates, and ``batched_fakes`` says its rows do not depend on each other."""
        n = self.n_critic
        z = tf.concat([self.latent(batch, base + i) for i in range(n)], axis=0)
        y = None if y_all is None else tf.concat([y_all[:, i] for i in range(n)], axis=0)
        fake = self.generate(z, y, training=True)
        return tf.reshape(fake, tf.concat([[n, batch], tf.shape(fake)[1:]], axis=0))

    def d_step(self, x, y, slot, fake=None):
        """One discriminator update on real batch ``x`` ``(B, ...)`` and ``fake`` (default: G on the
        slot's noise); returns its loss."""
        if fake is None:
            fake = self.generate(self.latent(tf.shape(x)[0], slot), y, training=True)
        with tf.GradientTape() as tape:
            d_loss = self.discriminator_loss(x, y, fake, slot)
            # identity unless the optimizer is a LossScaleOptimizer (train.mixed_precision), which
            # unscales the gradients again in apply_gradients
            scaled = self.d_optimizer.scale_loss(d_loss)
        variables = self.discriminator.trainable_variables
        grads = replica_share(tape.gradient(scaled, variables))  # Keras sums replicas' gradients
        self.d_optimizer.apply_gradients(zip(grads, variables))
        if self.clip_value is not None:
            c = self.clip_value
            # WGAN: clip every critic weight into [-c, c] (on every replica's copy); the raw ClipByValue is one
            # kernel per weight where tf.clip_by_value makes two (minimum, then maximum)
            assign_everywhere(variables, lambda v: tf.raw_ops.ClipByValue(
                t=tf.convert_to_tensor(v), clip_value_min=tf.constant(-c, v.dtype),
                clip_value_max=tf.constant(c, v.dtype)))
        return d_loss

    def g_step(self, batch, slot, x_real=None, y_real=None):
        """One generator update on ``batch`` fresh noise vectors; returns its loss.

        ``x_real``/``y_real``: a real batch (the round's last), read by feature matching and the unrolled
        look-ahead (``train_step`` passes it only when one of them is on)."""
        z = self.latent(batch, slot)
        y = self.random_labels(batch, slot) if self.conditional else None
        with tf.GradientTape() as tape:
            fake = self.generate(z, y, training=True)
            weights = self._unrolled_weights(z, fake, x_real, y_real, slot) if self.unroll_steps > 0 else None
            g_loss = self.generator_loss(fake, y, x_real, y_real, weights)
            scaled = self.g_optimizer.scale_loss(g_loss)  # identity without mixed precision
        variables = self.generator.trainable_variables
        grads = replica_share(tape.gradient(scaled, variables))  # Keras sums replicas' gradients
        self.g_optimizer.apply_gradients(zip(grads, variables))
        return g_loss

    def unroll_critic(self) -> bool:
        """Whether ``train_step`` unrolls the round's ``n_critic`` updates (else a graph loop; gan_cli.fast).
        Read at tracing time: ``n_critic`` changes between the segments of a critic schedule."""
        return fast_mod.unroll_critic(self.n_params, self.n_critic, self.fast)

    def train_step(self, data):
        # labelled data arrives as (x, y); an unconditional model ignores the labels
        x_all, y_all = data if isinstance(data, (tuple, list)) else (data, None)
        if not self.conditional:
            y_all = None
        batch = tf.shape(x_all)[0]  # this replica's share of the global batch
        base = self.round * self.slot_stride  # slots base .. base + n_critic + n_gen - 1 (<= stride)
        d_loss = g_loss = tf.constant(0.0)
        fakes = self.critic_fakes(batch, y_all, base) if self.batched_fakes and self.n_critic > 1 else None
        if self.unroll_critic() or tf.distribute.has_strategy():  # (merge_call needs no loop)
            for i in range(self.n_critic):
                d_loss = self.d_step(x_all[:, i], None if y_all is None else y_all[:, i], base + i,
                                     None if fakes is None else fakes[i])
        else:
            def update(i, _):
                y = None if y_all is None else tf.gather(y_all, i, axis=1)
                fake = None if fakes is None else tf.gather(fakes, i)
                return i + 1, self.d_step(tf.gather(x_all, i, axis=1), y, base + tf.cast(i, tf.int64), fake)

            _, d_loss = tf.while_loop(lambda i, _: i < self.n_critic, update, (tf.constant(0), d_loss))
        real = {}
        if self.d_features is not None or self.unroll_steps > 0:  # they read the round's last real batch
            last = self.n_critic - 1
            real = {"x_real": x_all[:, last], "y_real": None if y_all is None else y_all[:, last]}
        for j in range(self.n_gen):
            g_loss = self.g_step(batch, base + self.n_critic + j, **real)
            if self.ema_generator is not None:  # after every G update, whichever g_step made it
                update_ema(self.ema_generator, self.generator, self.g_ema, self.round * self.n_gen + j)
        self.round.assign_add(1)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return step_logs({"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()})

    # ---- inference helpers (numpy in, numpy out) ----------------------------------
    def sample(self, n: int, seed: int, labels: np.ndarray | None = None, batch_size: int = 1024):
        """``n`` generated samples (model space) from noise seeded by ``seed``; labels default to uniform."""
        rng = np.random.default_rng(seed)
        if self.latent_distribution == "uniform":
            z = rng.uniform(-1, 1, (n, self.latent_dim)).astype(np.float32)
        else:
            z = rng.standard_normal((n, self.latent_dim)).astype(np.float32)
        if self.conditional and labels is None:
            labels = rng.integers(0, self.num_classes, n).astype(np.int32)
        return self.generate_from(z, labels, batch_size), labels

    def generate_from(self, z: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 1024):
        out = []
        for s in range(0, len(z), batch_size):
            y = None if labels is None else labels[s:s + batch_size]
            out.append(np.asarray(self.generate(z[s:s + batch_size], y, training=False)))
        return np.concatenate(out, axis=0)
