"""Data-parallel training under ``torchrun`` (DistributedDataParallel).

``dlgn train`` reads the standard launcher variables (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``); without them it is a single process and nothing here does any
communication.

Semantics chosen so that a run does not depend on how many processes train it:

* ``train.batch_size`` is the *global* batch. Every rank draws the same per-epoch permutation
  (seeded by ``train.seed`` and the epoch) and takes a rank-strided share of each global batch
  (``batch[rank::world_size]``), which is what ``DistributedSampler`` does per epoch, without its
  padding: the union of the shares is exactly the single-process batch.
* Each rank's loss is its *sum* of cross-entropies times ``world_size / global batch``; DDP
  averages gradients over ranks, so the step sees the gradient of the global batch's mean loss,
  also for a last batch that does not split evenly (a rank may get an empty share).
* Gumbel noise is drawn per gate from a generator seeded identically on every rank, so all ranks
  sample the same hard tables, as one process would.

Checkpoints hold no trace of the process count, so ``--resume`` works with any other one.
"""

import hashlib
import os
from dataclasses import dataclass

import torch

__all__ = ["DistributedError", "Context", "setup", "wrap", "batch_share", "eval_share"]


class DistributedError(RuntimeError):
    """Ranks that disagree, or a launch that cannot work: the message says what to do."""


@dataclass
class Context:
    """Where this process stands: ``world_size`` 1 means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = ""
    owns_group: bool = False

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def barrier(self):
        if self.distributed:
            torch.distributed.barrier()

    def all_reduce_sum(self, values, device):
        """Sum a list of Python numbers over the ranks (float64)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def all_reduce_tensor(self, tensor, device):
        """Sum a CPU tensor over the ranks (returned on the CPU)."""
        if not self.distributed:
            return tensor
        t = tensor.to(device)
        torch.distributed.all_reduce(t)
        return t.cpu()

    def agree(self, what, payload, device):
        """Fail on every rank when ``payload`` (bytes) differs between ranks."""
        if not self.distributed:
            return
        digest = torch.tensor(list(hashlib.sha256(payload).digest()), dtype=torch.int64, device=device)
        gathered = [torch.empty_like(digest) for _ in range(self.world_size)]
        torch.distributed.all_gather(gathered, digest)
        differ = [r for r, g in enumerate(gathered) if not torch.equal(g, gathered[0])]
        if differ:
            raise DistributedError(
                f"ranks disagree on {what}: rank(s) {differ} differ from rank 0. Launch every rank with the same "
                f"config, --set options and dlgn version (the wiring comes from model.seed/train.seed)")

    def close(self, wait=True):
        """Leave the process group. ``wait``: meet every rank at a barrier first, so that no rank
        tears the group down while another still works in it (gloo can then abort the rank that
        left: "terminate called without an active exception"); ``False`` on an error path, where
        another rank may never arrive."""
        if self.owns_group and torch.distributed.is_initialized():
            if wait:
                self.barrier()
            torch.distributed.destroy_process_group()
            self.owns_group = False


def _env_int(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer; launch with torchrun") from None


def setup(device_name):
    """Join the process group torchrun describes (if any) and pick this rank's device.

    Returns ``(context, device_name)``: on CUDA each rank takes ``cuda:LOCAL_RANK``."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Context(), device_name
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise DistributedError(f"train.device = {device_name!r} under torchrun, but no CUDA device is available; "
                                   f"use --set train.device=cpu (gloo)")
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) on "
                                   f"this node; use --nproc-per-node {torch.cuda.device_count()} or fewer")
        device_name = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        device_name = "cpu"
        backend = "gloo"
    owns = not torch.distributed.is_initialized()
    if owns:
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise DistributedError("WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are not set; launch with torchrun "
                                   "(see 'make train-ddp' and the README)")
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    ctx = Context(rank, world, local_rank, local_world, torch.distributed.get_backend(), owns)
    return ctx, device_name


def wrap(net, device):
    """``net`` in DistributedDataParallel. Its buffers (the wiring) are fixed and verified equal
    on every rank beforehand, so they are not broadcast before each forward."""
    import inspect

    ddp = torch.nn.parallel.DistributedDataParallel
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else {"broadcast_buffers": False})  # renamed in newer torch
    return ddp(net, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def batch_share(batch, ctx):
    """This rank's share of one global batch of sample indices."""
    return batch[ctx.rank::ctx.world_size] if ctx.distributed else batch


def eval_share(count, ctx):
    """A contiguous slice of ``range(count)`` for this rank's part of an evaluation."""
    per = -(-count // ctx.world_size)
    start = min(count, ctx.rank * per)
    return slice(start, min(count, start + per))
