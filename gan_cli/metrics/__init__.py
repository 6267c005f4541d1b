"""Metrics layer: the scores of generated samples against real data, per kind of data set."""



def evaluator_for(data, num_samples: int, seed: int):
    """The function ``(samples, labels) -> {metric: value}`` that scores generated model-space
    samples of ``data`` against ``num_samples`` real ones (keyed on ``seed``)."""
    if data.kind == "toy2d":
        from gan_cli.metrics.toy2d import toy2d_evaluator

        return toy2d_evaluator(data, num_samples, seed)
    if data.kind == "image":
        from gan_cli.metrics.images import ImageEvaluator

        return ImageEvaluator(data, num_samples=num_samples, seed=seed)
    if data.kind == "csm":
        from gan_cli.metrics.csm import csm_evaluator

        return csm_evaluator(data, num_samples, seed)
    raise ValueError(f"no metrics for data of kind {data.kind!r}")


def higher_is_better() -> frozenset[str]:
    """The names of all metrics where larger is better (each metrics module lists its own)."""
    from gan_cli.metrics import csm, images, toy2d

    return toy2d.HIGHER_IS_BETTER | images.HIGHER_IS_BETTER | csm.HIGHER_IS_BETTER
