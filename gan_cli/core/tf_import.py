"""Importing TensorFlow quietly and without the optional modules gan-cli never uses."""

from __future__ import annotations

import os
import sys


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probing on CPU machines) silenced.

    The chatter is written by absl to file descriptor 2 before any Python logging is set up,
    so fd 2 is pointed at a temporary file during the import and replayed only if it fails.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    # Keras imports scikit-learn, matplotlib and pandas when it loads, and TensorFlow's legacy Keras
    # scipy.sparse, only for optional features gan-cli never uses (sklearn wrappers, image-gallery plots,
    # DataFrame and scipy-sparse inputs to fit); every one of these imports sits in try/except ImportError.
    # Hiding them while TensorFlow loads shortens every gan-cli start-up (docs/performance.md); they load
    # normally when gan-cli itself needs them (digits data, plots, metrics).
    deferred = [name for name in ("sklearn", "matplotlib", "pandas", "scipy") if name not in sys.modules]
    for name in deferred:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe also logs on first use
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            for name in deferred:
                if sys.modules.get(name, 0) is None:
                    del sys.modules[name]
            os.close(saved)
