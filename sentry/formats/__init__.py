"""On-disk formats: safetensors headers, model directories as the OMS `files` method lists
them, and signature bundles (Sigstore v0.3 / DSSE / in-toto, and model_signing v0.2)."""
