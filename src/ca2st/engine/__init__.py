"""Training, evaluation, optimisation, checkpoints and distributed helpers."""
