"""Job layer: one `gan train` job end to end (data, GAN, fit with callbacks, checkpoints, evaluation, report)."""
