"""torch.distributed glue for ``torchrun --nproc_per_node N -m learn2synth train ...``.

DistributedDataParallel cannot carry the meta-step: it all-reduces gradients in backward hooks, which do not
fire for ``torch.autograd.grad(..., create_graph=True)``. Instead every rank computes its gradients on its own
shard and :func:`mean_reducer` averages them, differentiably, before the functional update
(:func:`learn2synth.meta.hypergrad.meta_step` applies it to the inner gradient, to ``v`` in finite-difference mode
and to the hypergradients). With equal per-rank batches and per-image mean losses, N ranks with batch b take
exactly the step one process takes with batch N*b (tested). Plain methods use the same mechanism.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def mean_reducer(info: DistInfo):
    """A function averaging a list of tensors over ranks, in one collective, differentiable; None on one process."""
    if not info.active:
        return None
    from torch.distributed.nn.functional import all_reduce

    def reduce(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        total = all_reduce(flat, op=dist.ReduceOp.SUM) / info.world_size
        return [chunk.view_as(t) for chunk, t in zip(total.split([t.numel() for t in tensors]), tensors, strict=True)]

    return reduce


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (e.g. its RNG state), in rank order, on every rank."""
    if not info.active:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is True on any (so all ranks take a collective decision together)."""
    if not info.active:
        return flag
    return any(gather_objects(bool(flag), info))
