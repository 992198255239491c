"""Integrity across ranks on torch.distributed: replicas and shards (distributed), trainer ->
engine weight sync (weightsync), and the plan, layout and collectives under both."""
