"""CLI layer: the argparse front (`gan`), the Hydra app behind `gan train` and its callbacks."""
