"""One WGAN-GP critic update on the ring benchmark's critic, with Keras's ReLU against ``ReLUFromOutput``.

    python benchmarks/gp_critic_update.py [--repeats 3] [--updates 1000]

The critic is ``experiment=bench_ring``'s (2 -> 128 -> 128 -> 1, ReLU, batch 256): the loss
``mean D(fake) - mean D(real) + 10 * gradient_penalty`` (``gan_cli.losses.adversarial``), its weight gradients by
autodiff and a Keras RMSprop step, 50 updates per compiled call. The two activations give the same
gradients; ``ReLUFromOutput`` keeps TensorFlow from multiplying the zeros of the mask's derivative back
through the forward pass (``gan_cli/fast/activations.py``). Prints the matrix products in each traced
update and the milliseconds per update of each, alternating, per repeat.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH, WIDTH, PER_CALL = 256, 128, 50


def critic(activation, width: int = WIDTH):
    """The ring critic (2 -> width -> width -> 1) with ``activation()`` after each hidden Dense layer (same
    initial weights each call)."""
    import keras

    keras.utils.set_random_seed(1)
    x = keras.Input((2,))
    h = x
    for _ in range(2):
        h = activation()(keras.layers.Dense(width)(h))
    return keras.Model(x, keras.layers.Dense(1)(h))


def penalty_grads(net, batch: int = BATCH):
    """A function of no arguments giving ``net``'s weight gradients of the WGAN-GP critic loss
    ``mean D(fake) - mean D(real) + 10 * gradient_penalty`` on fixed ``(batch, 2)`` real and fake batches."""
    import numpy as np
    import tensorflow as tf

    from gan_cli.losses.adversarial import gradient_penalty

    rng = np.random.default_rng(0)
    real, fake = (tf.constant(rng.standard_normal((batch, 2)), tf.float32) for _ in range(2))
    eps = tf.constant(rng.uniform(size=batch), tf.float32)

    def grads():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(net(fake)) - tf.reduce_mean(net(real))
            loss = loss + 10.0 * gradient_penalty(net, real, fake, eps)
        return tape.gradient(loss, net.trainable_variables)

    return grads


def matmuls(fn) -> int:
    """Matrix products in the graph traced from ``fn`` (before grappler's rewrites)."""
    ops = fn.get_concrete_function().graph.get_operations()
    return sum(op.type == "MatMul" for op in ops)


def compiled_updates(net):
    """(tf.function running ``PER_CALL`` critic updates, matrix products in one traced update)."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.RMSprop(5e-5)
    grads, variables = penalty_grads(net), net.trainable_variables

    @tf.function
    def run():
        for _ in range(PER_CALL):
            optimizer.apply_gradients(zip(grads(), variables))

    return run, matmuls(tf.function(grads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=1000, help="timed updates per repeat and side")
    args = parser.parse_args()
    # before TensorFlow loads (here, not at import: tests import this module for its critic)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the gan command sets it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from gan_cli.fast.activations import ReLUFromOutput

    sides = {"keras ReLU": lambda: keras.layers.Activation("relu"), "ReLUFromOutput": ReLUFromOutput}
    # every critic first: keras.utils.set_random_seed clears TensorFlow's kernel caches, which would make a
    # function compiled before it re-optimise its graph on its next call
    nets = {name: critic(activation) for name, activation in sides.items()}
    runs = {}
    for name, net in nets.items():
        runs[name], products = compiled_updates(net)
        runs[name]()  # trace (the optimizer builds its slots)
        runs[name]()  # warm up
        print(f"{name}: {products} matrix products per traced critic update")
    calls = max(1, args.updates // PER_CALL)
    for repeat in range(args.repeats):
        line = []
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(calls):
                run()
            line.append(f"{name} {(time.perf_counter() - start) / (calls * PER_CALL) * 1e3:.3f} ms/update")
        print(f"repeat {repeat + 1}: " + ", ".join(line))


if __name__ == "__main__":
    main()
