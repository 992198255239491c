"""Checks while a model runs: IntegrityGuard (guard) and signed checkpoints (checkpoint)."""
