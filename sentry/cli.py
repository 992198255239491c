"""The `sentry` command line: hash, demo, bench.

Exit codes: 0 success, 1 a check failed, 2 usage or input error.
"""
import argparse
import os
import sys

import numpy as np
import torch

from sentry_ops import ALGORITHMS, hash_tensors

from . import digests_hex


class InputError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def _file_tensor(path):
    """The file's bytes as a uint8 CPU tensor, memory-mapped (no copy into Python)."""
    size = os.path.getsize(path)
    if size == 0:
        return torch.empty(0, dtype=torch.uint8)
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="r"))


def _load_pt(path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise InputError(f"{path}: not a weights-only torch file ({exc})") from exc
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: expected a state dict (a dict of tensors)")
    return obj


def cmd_hash(args):
    import warnings

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    for path in args.paths:
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file")
        if args.tensors:
            if not path.endswith((".pt", ".pth", ".bin")):
                raise InputError(f"{path}: --tensors reads .pt/.pth/.bin state dicts")
            state = _load_pt(path)
            device = torch.device(args.device)
            tensors = [t.to(device) for t in state.values()]
            for name, h in zip(state, digests_hex(hash_tensors(tensors, args.algorithm))):
                print(f"{h}  {path}:{name}")
        else:
            digest = hash_tensors([_file_tensor(path)], args.algorithm)
            print(f"{digests_hex(digest)[0]}  {path}")
    return 0


def cmd_demo(args):
    from .demo import run

    return run(args.model, args.device)


def cmd_bench(args):
    from .bench import main as bench_main

    return bench_main(args.rest)


def parser():
    p = argparse.ArgumentParser(prog="sentry", description="Integrity for ML artifacts.")
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hash", help="digest files (like b3sum) or the tensors of a .pt state dict")
    h.add_argument("paths", nargs="+")
    h.add_argument("-a", "--algorithm", default="blake3", choices=ALGORITHMS)
    h.add_argument("--tensors", action="store_true", help="one digest per tensor of a .pt file")
    h.add_argument("--device", default="cpu", help="where to hash tensors (cpu, cuda)")
    h.set_defaults(func=cmd_hash)
    d = sub.add_parser("demo", help="hash a model-shaped state dict and catch a tampered weight")
    d.add_argument("--model", default="resnet152")
    d.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    d.set_defaults(func=cmd_demo)
    b = sub.add_parser("bench", help="hashing benchmark (sentry bench -- --help)", add_help=False)
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"sentry {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:
        print(f"sentry {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
