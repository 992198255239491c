"""Writes the signed model directory the C++ example (verify_model.cpp) checks:
OUT/model/model.safetensors (a small MLP whose weights follow a formula the example computes
too), OUT/model.sig (sentry.sign_files: the file's SHA-256 and every tensor's BLAKE3) and
OUT/key.pub. Run from the repository root (ctest does): python3 examples/make_signed_model.py OUT
"""
import os
import sys

import torch
from safetensors.torch import save_file

import sentry


def formula_weights(shape):
    """Exactly representable values: ((i % 7) - 3) / 4 for element i in row-major order."""
    n = 1
    for d in shape:
        n *= d
    return ((torch.arange(n) % 7 - 3).to(torch.float32) / 4).reshape(shape)


def main(out):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    state = {name: formula_weights(t.shape) for name, t in model.state_dict().items()}
    os.makedirs(os.path.join(out, "model"), exist_ok=True)
    save_file(state, os.path.join(out, "model", "model.safetensors"))
    key = sentry.crypto.PrivateKey.generate()
    sentry.crypto.write_public_key(os.path.join(out, "key.pub"), key.public_key())
    signature = os.path.join(out, "model.sig")
    if os.path.exists(signature):
        os.remove(signature)  # signed again with the new key
    sentry.sign_files(os.path.join(out, "model"), key, signature)
    print(f"signed {sorted(state)} into {signature}")


if __name__ == "__main__":
    main(sys.argv[1])
