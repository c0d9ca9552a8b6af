"""Process-group helpers shared by losses and the training loop (single-process runs need none of it)."""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def leave_process_group() -> None:
    """Destroys the process group before the process exits. Left to interpreter teardown, gloo's worker threads
    can be destroyed while still joinable, and a rank that finishes first then dies of SIGABRT ("terminate
    called without an active exception") although its run succeeded."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(RuntimeError, ValueError):  # a peer already gone: nothing to tear down cleanly
            dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


PEER_FAILURE_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "broken pipe", "peer", "socket")


def is_peer_failure(error: BaseException) -> bool:
    """Whether an error raised inside a collective means another process died or hung (not a bug here)."""
    if isinstance(error, dist.DistError):
        return True
    return any(word in str(error).lower() for word in PEER_FAILURE_WORDS)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenates `x` (B, ...) from every rank into (W * B, ...); gradients flow back to each owner.

    Backward sums the gradients that all ranks' losses send to a rank's slice, so that DDP's gradient
    averaging yields the gradient of the mean of the per-rank losses, i.e. of the global-batch loss.
    """
    if not is_distributed():
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for each slice and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: ANN001
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        stacked = torch.stack(grads).contiguous()  # (W, B, ...)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over ranks, differentiable: for batch statistics and correlation matrices of the global batch.

    Every rank then holds the same global value; backward sums the ranks' gradients, so each rank's input
    receives W times the gradient of the (identical) global loss, which DDP's averaging divides back.
    """
    if not is_distributed():
        return x
    return _AllReduceWithGrad.apply(x)


class _AllReduceWithGrad(torch.autograd.Function):
    """Sum over ranks; every rank's output depends on every input, so the backward is a sum too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        total = x.detach().clone().contiguous()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        total = grad.clone().contiguous()
        dist.all_reduce(total)
        return total


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like `gather_with_grad` without gradients: for queues, teachers and statistics."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over ranks (no gradient), e.g. for DINO's centre or logged scalars."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


def mean_over_ranks(scalars: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Logged scalars averaged over ranks (one all-reduce): the global batch's loss, as one process would log it."""
    if not is_distributed():
        return scalars
    stacked = torch.stack([torch.as_tensor(value, device=device).float().reshape(()) for value in scalars.values()])
    return dict(zip(scalars, all_reduce_mean(stacked), strict=True))
