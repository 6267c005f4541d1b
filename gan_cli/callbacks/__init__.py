"""Callbacks layer: Keras callbacks that monitor a run (progress, evaluation, checkpoints, faults)."""
