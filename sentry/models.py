"""State dicts shaped like real models, with random weights, for demos, tests and benchmarks.

Shapes come from sentry/model_shapes/model_shapes.json (read off torchvision / transformers models; see
../shared/data/README.md), so no download and no model library is needed. Where torchvision or
transformers is installed, `real_state_dict` builds the real architecture with weights=None.
"""
import json
import os

import torch

_SHAPES = os.path.join(os.path.dirname(__file__), "model_shapes", "model_shapes.json")
MODELS = ("resnet152", "vgg19", "bert-base-uncased", "gpt2", "gpt2-xl")


def model_shapes():
    with open(_SHAPES) as f:
        return json.load(f)


def _fill_random_(t, generator):
    if t.is_floating_point():
        t.normal_(generator=generator)
    elif t.dtype == torch.bool:
        t.random_(0, 2, generator=generator)
    else:
        t.random_(0, 1000, generator=generator)
    return t


def shaped_state_dict(model, device="cpu", seed=0):
    """{key: tensor} with the model's names, dtypes and shapes and random values."""
    shapes = model_shapes()
    if model not in shapes:
        raise ValueError(f"unknown model '{model}'; known: {', '.join(sorted(shapes))}")
    generator = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for key, dtype, shape in shapes[model]:
        t = torch.empty(shape, dtype=getattr(torch, dtype), device=device)
        out[key] = _fill_random_(t, generator)
    return out


def real_state_dict(model, device="cpu"):
    """The real architecture's state_dict (random init), or None without the library."""
    with torch.device(device):  # initialise where the weights will live (fast on a GPU)
        return _real_state_dict(model)


def _real_state_dict(model):
    try:
        if model in ("resnet152", "vgg19"):
            import torchvision

            return getattr(torchvision.models, model)(weights=None).state_dict()
        import transformers

        if model.startswith("gpt2"):
            sizes = {"gpt2": (768, 12, 12), "gpt2-xl": (1600, 48, 25)}[model]
            cfg = transformers.GPT2Config(n_embd=sizes[0], n_layer=sizes[1], n_head=sizes[2])
            return transformers.GPT2LMHeadModel(cfg).state_dict()
        if model == "bert-base-uncased":
            return transformers.BertModel(transformers.BertConfig()).state_dict()
    except ImportError:
        return None
    return None


def state_dict_bytes(state_dict):
    return sum(t.numel() * t.element_size() for t in state_dict.values())
