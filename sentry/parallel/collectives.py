"""The few torch.distributed collectives Sentry's checks use, on any backend (gloo, NCCL, ...).

Without an initialised process group every function behaves as a world of one. Ranks are
ranks within `group`. With NCCL, set the current CUDA device (torch.cuda.set_device) first.
"""
import torch
import torch.distributed as dist


def world(group):
    """(world size, rank) in `group`; (1, 0) without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def comm_device(group):
    """CPU tensors for gloo (and any backend set that has a CPU one), the current CUDA device
    for NCCL, which takes nothing else."""
    if not (dist.is_available() and dist.is_initialized()):
        return torch.device("cpu")
    backend = str(dist.get_backend(group)).lower()
    if "gloo" in backend or "mpi" in backend or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def gather_rows(t, group):
    """[world, *t.shape] on the host: t from every rank (same shape on every rank)."""
    size, _ = world(group)
    if size == 1:
        return t.unsqueeze(0).cpu()
    t = t.to(comm_device(group)).contiguous()
    out = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(out, t, group=group)
    return torch.stack(out).cpu()


def gather_objects(obj, group):
    """all_gather_object: for the small, variable-size parts (pickled; fine at these sizes)."""
    size, _ = world(group)
    if size == 1:
        return [obj]
    out = [None] * size
    dist.all_gather_object(out, obj, group=group)
    return out


def gather_flat(t, group):
    """uint8 [world * t.numel()] on t's device: every rank's flat t, in rank order (t has the
    same size everywhere; one collective, no copies beyond the output)."""
    size, _ = world(group)
    if size == 1:
        return t
    out = torch.empty(size * t.numel(), dtype=t.dtype, device=t.device)
    # all_gather_single is torch 2.13's name of all_gather_into_tensor.
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, t, group=group)
    return out
