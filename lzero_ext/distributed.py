"""Data parallelism over ranks (``torchrun``): one process per GPU (or CPU worker), identical learner weights.

Each rank collects with its own envs, buffer and LLM prior; the world-model and LLM learners average their
gradients over ranks right before the optimiser step (one flattened ``all_reduce`` per step), so identical starting
weights (``broadcast_state`` from rank 0) plus identical averaged gradients keep every rank's weights identical.
Plain gradient averaging is used instead of ``DistributedDataParallel`` because the world model is trained through
``world_model.compute_loss`` rather than ``forward`` (DDP only hooks ``forward``) and the LLM trainer accumulates
over several ``train_step`` calls.

The backend is NCCL when CUDA is available and gloo otherwise; with ``WORLD_SIZE`` unset or 1 no process group is
created and every helper is a no-op, so single-process runs are unchanged.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class DistContext:
    """Rank, world size and device of this process; ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, backend: str | None = None) -> "DistContext":
        """Read torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and join the process group if there are peers.

        ``MASTER_ADDR`` / ``MASTER_PORT`` (set by torchrun) give the rendezvous (``env://``).
        """
        env = os.environ if env is None else env
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank, local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
        if world_size <= 1:
            return cls()
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, evaluates, checkpoints and exports."""
        return self.rank == 0

    @property
    def device(self) -> str:
        """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"

    def _comm_device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if self.backend == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_true(self, flag: bool) -> bool:
        """True iff ``flag`` is True on every rank (a collective decision, so no rank waits alone in a collective)."""
        if not self.enabled:
            return bool(flag)
        value = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() > 0.5)

    def any_true(self, flag: bool) -> bool:
        """True iff ``flag`` is True on some rank (e.g. a stop signal that reached only one process)."""
        return not self.all_true(not flag)

    def sum(self, value: float) -> float:
        """Sum of ``value`` over ranks (e.g. env steps of all collectors)."""
        if not self.enabled:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(tensor)
        return float(tensor.item())

    def all_reduce_gradients(self, params: Iterable[nn.Parameter], ok: bool = True) -> bool:
        """Average the gradients of ``params`` over ranks in one flattened all-reduce; return whether every rank
        had a valid step.

        A rank whose step is invalid (non-finite loss) still calls this with ``ok=False`` so that the others are not
        left waiting; its gradients count as zero and every rank then skips the step (the returned flag is False
        everywhere). Missing gradients (``None``) count as zero and are written back.
        """
        params = [p for p in params if p.requires_grad]
        if not self.enabled:
            return ok
        device = params[0].device if params else self._comm_device()
        grads = [p.grad if (ok and p.grad is not None) else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [torch.tensor([float(ok)], device=device)])
        flat = flat.to(self._comm_device())
        dist.all_reduce(flat)
        all_ok = bool(flat[-1].item() >= self.world_size - 0.5)
        flat = flat[:-1] / self.world_size
        offset = 0
        for p, g in zip(params, grads):
            numel = g.numel()
            averaged = flat[offset:offset + numel].view_as(g).to(device=p.device, dtype=p.dtype)
            offset += numel
            if p.grad is None:
                p.grad = averaged.clone()
            else:
                p.grad.copy_(averaged)
        return all_ok

    def broadcast_state(self, module: nn.Module) -> None:
        """Overwrite ``module``'s parameters and buffers with rank 0's, in place (same start on every rank)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                staged = tensor.detach().to(self._comm_device())
                dist.broadcast(staged, src=0)
                if staged.data_ptr() != tensor.data_ptr():
                    tensor.copy_(staged)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
