"""gan-cli: config-driven GAN experiments on TensorFlow/Keras."""

__version__ = "0.1.0"
