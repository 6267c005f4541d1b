"""TensorFlow runtime helpers: the context a graph is traced in (XLA compilation, op determinism) and variables.

TensorFlow has no public way to ask whether a graph is being compiled by XLA or whether op determinism
is on, nor to switch determinism off again; the three functions that need it import
``tensorflow.python`` modules, each with a safe fallback when a release moves them.

Some TensorFlow ops have no XLA kernel (``tf.unique``; a ``tf.cond`` whose branch holds a
``TensorArray``, as ``tf.map_fn`` builds), and some GPU kernels add with atomics, which op
determinism (``train.deterministic``) rules out: layers that use them take another path there.
"""

from __future__ import annotations


def in_xla() -> bool:
    """True while tracing a function that XLA compiles (``train.jit_compile``)."""
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - private module moved: take the path that always compiles
        return True
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def op_determinism() -> bool:
    """Whether ``tf.config.experimental.enable_op_determinism()`` is on (``train.deterministic``)."""
    try:
        from tensorflow.python.framework import config as tf_config

        return bool(tf_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):  # pragma: no cover - private API moved: assume it is on
        return True


def disable_op_determinism() -> None:
    """Switch op determinism off again (TensorFlow exports only the switch on)."""
    try:
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()
    except (ImportError, AttributeError):  # pragma: no cover - private API moved: it stays on
        pass


def tf_variable(v):
    """The ``tf.Variable`` behind a Keras variable (a plain ``tf.Variable`` as it is)."""
    tf_var = getattr(v, "value", v)
    return v if callable(tf_var) else tf_var  # a plain tf.Variable's .value is a method
