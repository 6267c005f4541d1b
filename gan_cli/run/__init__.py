"""Run layer: run-folder files, checkpoints, objectives and loading/exporting trained generators."""
