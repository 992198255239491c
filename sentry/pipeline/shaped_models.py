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
    return state_dict_of(shapes[model], device, seed)


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


def llama_shapes(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256,
                 dtype="bfloat16"):
    """[(key, dtype, shape)] of a Llama decoder in transformers' LlamaForCausalLM naming, no
    download needed; the defaults are Llama-3-8B's (8.0B parameters, lm_head untied)."""
    head_dim = hidden // heads
    out = [("model.embed_tokens.weight", dtype, [vocab, hidden])]
    for i in range(layers):
        p = f"model.layers.{i}"
        out += [(f"{p}.self_attn.q_proj.weight", dtype, [heads * head_dim, hidden]),
                (f"{p}.self_attn.k_proj.weight", dtype, [kv_heads * head_dim, hidden]),
                (f"{p}.self_attn.v_proj.weight", dtype, [kv_heads * head_dim, hidden]),
                (f"{p}.self_attn.o_proj.weight", dtype, [hidden, heads * head_dim]),
                (f"{p}.mlp.gate_proj.weight", dtype, [intermediate, hidden]),
                (f"{p}.mlp.up_proj.weight", dtype, [intermediate, hidden]),
                (f"{p}.mlp.down_proj.weight", dtype, [hidden, intermediate]),
                (f"{p}.input_layernorm.weight", dtype, [hidden]),
                (f"{p}.post_attention_layernorm.weight", dtype, [hidden])]
    out += [("model.norm.weight", dtype, [hidden]), ("lm_head.weight", dtype, [vocab, hidden])]
    return out


def state_dict_of(shapes, device="cpu", seed=0):
    """{key: tensor} of [(key, dtype, shape)] with random values (the same for the same seed)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return {key: _fill_random_(torch.empty(shape, dtype=getattr(torch, dtype), device=device),
                               generator) for key, dtype, shape in shapes}
