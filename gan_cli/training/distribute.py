"""Multi-device training with ``tf.distribute`` (``train.strategy``): none | mirrored | multiworker.

* ``mirrored``: ``tf.distribute.MirroredStrategy`` over every logical GPU of this machine (every
  logical CPU device when there is no GPU, so a CPU split into logical devices trains the same way).
* ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy``; the cluster comes from the
  ``TF_CONFIG`` environment variable (no ``TF_CONFIG``: a single worker).

How one round is split (``GAN.train_step``): the real data of a round has shape
``(B, n_critic, *sample_shape)`` with ``B = train.batch_size`` the *global* batch; ``stream_for``
puts one batch op in front of it so that ``tf.distribute`` can cut the first axis, replica ``r``
of ``R`` getting rows ``r*B/R .. (r+1)*B/R - 1``. Noise, fake labels and gradient-penalty weights
are drawn for the whole global batch from the stateless RNG (same key as on one device) and each
replica keeps its own rows (``replica_rows``), so the replicas see different noise and together
exactly the noise of a one-device run. Every loss is a mean over the replica's rows; Keras' optimizer
*sums* the replicas' gradients (``_all_reduce_sum_gradients``), so each replica's gradients are
divided by ``R`` first (``replica_share``): the sum is then the gradient of the mean over the global
batch, the same update as on one device. Weight clipping runs in cross-replica context on every
copy (``assign_everywhere``).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Iterator

from gan_cli.core.errors import ConfigError
from gan_cli.core.tf_context import tf_variable

# One strategy object per kind and process, reused by every run in it (a sweep's jobs in one
# process): each new MirroredStrategy restarts its collective-op keys, and a key that an earlier
# strategy used for another tensor shape makes the all-reduce fail; a multi-worker strategy can
# only be set up once per process anyway.
_CACHE: dict[str, Any] = {}


def _tf_config_workers() -> int:
    """Workers listed in ``TF_CONFIG`` (1 when unset); a malformed value is a ConfigError."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return 1
    try:
        spec = json.loads(raw)
        cluster = spec["cluster"]
        task = spec["task"]
        n = sum(len(cluster.get(k, [])) for k in ("chief", "worker"))
        if not isinstance(task.get("type"), str) or not isinstance(task.get("index"), int) or n < 1:
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError('TF_CONFIG is not valid for train.strategy=multiworker; set it to JSON like '
                          '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                          '"index": 0}}') from None
    return n


def make_strategy(name: str):
    """The ``tf.distribute.Strategy`` for ``train.strategy`` (``None`` for ``none``).

    Call it before anything initialises TensorFlow's runtime: a multi-worker strategy configures
    the collective ops at program start-up."""
    if name == "none":
        return None
    if name in _CACHE:
        return _CACHE[name]
    import logging

    import tensorflow as tf

    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # not its INFO lines about the devices
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    else:
        _tf_config_workers()
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as exc:
            raise ConfigError(f"cannot start train.strategy=multiworker: {str(exc).splitlines()[0]}; "
                              "run one `gan train` per worker with TF_CONFIG set before it starts") from None
    _CACHE[name] = strategy
    return strategy


def describe(strategy) -> str:
    """``mirrored, 2 replicas`` (for the start-up line); ``""`` without a strategy."""
    if strategy is None:
        return ""
    kind = "mirrored" if type(strategy).__name__.startswith("Mirrored") else "multiworker"
    return f"{kind}, {strategy.num_replicas_in_sync} replica(s)"


def check_batch(batch_size: int, pack: int, strategy) -> None:
    """The global batch must split into equal replica batches (each a whole number of PacGAN packs)."""
    if strategy is None:
        return
    r = int(strategy.num_replicas_in_sync)
    if batch_size % (r * pack):
        need = f"{r} replicas" + (f" x model.pack={pack}" if pack > 1 else "")
        raise ConfigError(f"train.batch_size={batch_size} must be a multiple of {r * pack} ({need}) "
                          "with train.strategy: the global batch is split evenly across the replicas")


@contextlib.contextmanager
def scope(strategy) -> Iterator[None]:
    """``strategy.scope()`` (models, optimizers and the GAN are built inside it); no-op for ``None``."""
    if strategy is None:
        yield
        return
    with strategy.scope():
        yield


def stream_for(dataset, batch_size: int, strategy):
    """``dataset`` (elements ``(B, n_critic, ...)`` or ``(x, y)``) ready for ``strategy`` to split.

    ``tf.distribute`` splits a dataset along the first axis only behind a batch op, so the
    elements are unbatched into rows and batched again by ``B`` (the same elements, in the same
    order); sharding across workers is by data (every worker computes the same stream).
    ``strategy``: the model's (``keras.Model.distribute_strategy``; TensorFlow's default strategy
    or ``None`` leave the dataset as it is)."""
    import tensorflow as tf

    if not isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)):
        return dataset

    ds = dataset.unbatch().batch(int(batch_size), drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _replica() -> tuple[int, Any]:
    """(replicas in sync, this replica's id); ``(1, 0)`` outside ``strategy.run``."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return 1, 0
    rid = ctx.replica_id_in_sync_group
    # a constant per replica: use it as a Python int (a captured tensor would leave an unfed
    # placeholder inside Keras' steps_per_execution loop)
    static = tf.get_static_value(rid)
    return int(ctx.num_replicas_in_sync), (int(static) if static is not None else rid)


def replica_rows(draw: Callable[[Any], Any], rows) -> Any:
    """This replica's ``rows`` rows of ``draw(rows * R)`` (``draw(n)``: a tensor with ``n`` rows).

    One replica: ``draw(rows)`` itself, so single-device runs are unchanged."""
    r, rid = _replica()
    if r == 1:
        return draw(rows)
    full = draw(rows * r)
    return full[rid * rows:(rid + 1) * rows]


def replica_share(grads: list) -> list:
    """Each gradient divided by the number of replicas (Keras then sums them across replicas)."""
    r, _ = _replica()
    if r == 1:
        return grads
    return [None if g is None else g / r for g in grads]


def assign_everywhere(variables: list, fn: Callable[[Any], Any]) -> None:
    """``v.assign(fn(v))`` for each (Keras) variable, on every replica's copy.

    Inside ``strategy.run`` a mirrored variable cannot be assigned per replica; the update is
    made in cross-replica context (``merge_call``) the way Keras' optimizer applies its updates."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if not tf.distribute.has_strategy() or tf.distribute.get_replica_context() is None:
        for v in variables:
            v.assign(fn(v))
        return

    def update(distribution, variables):
        for v in variables:
            distribution.extended.update(tf_variable(v), lambda var: var.assign(fn(var)), group=False)

    tf.__internal__.distribute.interim.maybe_merge_call(update, strategy, variables)


def step_logs(logs: dict) -> dict:
    """``train_step``'s logs as Keras can reduce them across workers.

    Under a multi-worker strategy Keras averages a step's outputs with ``strategy.reduce("MEAN",
    v, axis=0)``, which fails on scalars; there each value gets shape ``(1,)`` (the mean over the
    replicas is then the scalar again). Elsewhere the logs are returned unchanged."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()  # noqa: SLF001 - the same test as Keras' trainer
    if not multi_worker:
        return logs
    return {k: tf.reshape(v, [1]) for k, v in logs.items()}
