"""Process-group facts for data-parallel training under `torchrun` (DDP), in one place.

`torchrun --nproc_per_node=N` starts N processes and gives each RANK, WORLD_SIZE, LOCAL_RANK and
the rendezvous address in its environment. Without those variables `world()` is rank 0 of 1, no
process group is made and every helper here is the identity, so single-process training runs
exactly as it did before this module existed.

Like `recs.device`, nothing here imports torch at module import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from recs.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "World",
    "average_gradients",
    "broadcast_array",
    "broadcast_flags",
    "data_parallel",
    "distributed_session",
    "gather_with_grad",
    "init_process_group",
    "is_main",
    "reduce_step",
    "shutdown",
    "world",
]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


def world() -> World:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"RANK={rank} / WORLD_SIZE={size}: a rank must lie in [0, WORLD_SIZE)")
    return World(rank, size, local)


def is_main() -> bool:
    """Rank 0 validates, logs, saves checkpoints and writes the artifact; the others only train."""
    return world().is_main


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_process_group() -> World:
    """Join torchrun's process group (nccl on CUDA, one GPU per local rank; gloo on CPU).
    Nothing to do in a single process or when the group already exists."""
    import torch
    import torch.distributed as dist

    current = world()
    if not current.distributed or (dist.is_available() and dist.is_initialized()):
        return current
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed: run without torchrun")
    if torch.cuda.is_available():
        # "cuda" (recs.device.torch_device) then means this rank's own GPU.
        torch.cuda.set_device(current.local_rank % torch.cuda.device_count())
        backend = "nccl"
    else:
        backend = "gloo"
    # The other ranks wait in a collective while rank 0 alone validates (encodes the catalog): a
    # large catalog can take longer than nccl's default 10 minutes.
    dist.init_process_group(backend=backend, rank=current.rank, world_size=current.size, timeout=timedelta(hours=1))
    return current


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed_session() -> Iterator[World]:
    """The process group for the duration of a command (nothing in a single process)."""
    current = init_process_group()
    try:
        yield current
    finally:
        if current.distributed:
            shutdown()


def _comm_device() -> str:
    """nccl moves CUDA tensors only; gloo CPU tensors."""
    import torch.distributed as dist

    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def _gather_function() -> type:
    import torch
    import torch.distributed as dist

    class GatherWithGrad(torch.autograd.Function):
        """all_gather whose backward sums every rank's gradient of the gathered tensor and hands
        each rank the part of its own rows: every rank's loss reads every rank's rows, so the
        local rows' gradient is the sum over ranks (what torch.distributed.nn's all_gather does,
        written with all_reduce because gloo has no reduce_scatter)."""

        @staticmethod
        def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            tensor = tensor.contiguous()
            parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, tensor)
            ctx.rows = tensor.shape[0]
            return torch.cat(parts)

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            grad = grad.contiguous().clone()
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            start = dist.get_rank() * ctx.rows
            return grad[start : start + ctx.rows]

    return GatherWithGrad


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` (equal shapes) stacked in rank order along dim 0; gradients flow back
    to each rank's own rows. The identity in a single process."""
    if not _active():
        return tensor
    return _gather_function().apply(tensor)


def broadcast_array(array: np.ndarray | None) -> np.ndarray:
    """Rank 0's float32 matrix on every rank (the others pass None). The identity in a single process."""
    import numpy as np
    import torch
    import torch.distributed as dist

    if not _active():
        if array is None:
            raise ValueError("broadcast_array: a single process must pass its array")
        return array
    device = _comm_device()
    main = dist.get_rank() == 0
    shape = torch.tensor(array.shape if main else (0, 0), dtype=torch.int64, device=device)
    dist.broadcast(shape, src=0)
    rows, cols = (int(v) for v in shape.tolist())
    data = (torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device) if main
            else torch.empty((rows, cols), dtype=torch.float32, device=device))
    dist.broadcast(data, src=0)
    return data.cpu().numpy()


def broadcast_flags(*flags: bool) -> tuple[bool, ...]:
    """Rank 0's decisions (best epoch, stop early) on every rank, so that all ranks act together."""
    import torch
    import torch.distributed as dist

    if not _active():
        return tuple(flags)
    data = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=_comm_device())
    dist.broadcast(data, src=0)
    return tuple(bool(v) for v in data.tolist())


def reduce_step(loss: float, stop: bool) -> tuple[float, bool]:
    """The step's loss averaged over ranks (the global batch's mean loss) and whether any rank
    wants to stop (a time budget runs out on each rank's own clock): all ranks stop together."""
    import torch
    import torch.distributed as dist

    if not _active():
        return loss, stop
    data = torch.tensor([loss, float(stop)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(data, op=dist.ReduceOp.SUM)
    return float(data[0]) / dist.get_world_size(), bool(data[1] > 0)


def data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """`model` wrapped in DistributedDataParallel (gradients averaged over ranks in backward);
    `model` itself in a single process. Callers go through the wrapper's forward."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if not _active():
        return model
    devices = [torch.cuda.current_device()] if _comm_device() == "cuda" else None
    # static_graph: the same parameters take part in every step, and some never do (BERT's pooler
    # under mean pooling, the history weight of a text-only user tower): DDP learns which in the
    # first step instead of searching the graph each step. Buffers are constant: not re-synced.
    return DistributedDataParallel(model, device_ids=devices, static_graph=True, forward_sync_buffers=False)


def average_gradients(params: list[torch.Tensor]) -> None:
    """Every parameter's gradient averaged over ranks, after backward: what DDP does, for a loop
    that calls its model several times before one backward (the cross-encoder scores one list per
    call), which DDP's reducer does not allow. A parameter no rank has a gradient for keeps None
    (as in one process). No-op in a single process."""
    import torch
    import torch.distributed as dist

    if not _active() or not params:
        return
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(used, op=dist.ReduceOp.SUM)  # a rank without queries this step has no gradients
    with_grad = [p for p, n in zip(params, used.tolist(), strict=True) if n]
    if not with_grad:
        return
    for param in with_grad:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])  # one collective, not one per tensor
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for param in with_grad:
        param.grad.copy_(flat[offset : offset + param.numel()].view_as(param.grad))
        offset += param.numel()
