"""Bottom layer: the error types every layer raises and TensorFlow runtime state."""
