"""Training layer: the GAN Model's train_step, techniques, optimizers, distribution, precision and the fit loop."""
