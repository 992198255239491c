"""OpenSSF Model Signing: sign and verify models (tensors in memory, model directories), the
verified loader, and trusted tensor digests taken from a signature."""
