"""Datasets: signed manifests and the sample checker (manifest), sample stores, synthetic data
and the verifying data loader (stores), stores held in GPU memory (resident)."""
