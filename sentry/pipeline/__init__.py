"""The dataset -> train -> infer demonstration: the agents, signed training provenance, the
demo, and model-shaped state dicts for demos and benchmarks (shaped_models)."""
