"""Shuffled batch normalisation, so a query and its key are normalised with statistics of different samples.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", arXiv 1911.05722, section 3.3:
with batch norm computed over the samples of one GPU, a query and its positive key encoded in the same group
share batch statistics, and the model can "cheat" the pretext task through them. MoCo shuffles the key
batch before distributing it over the GPUs and restores the order after encoding, while the query batch
keeps its order, so the statistics of a query and of its key come from two different subsets.

- Under DDP (several processes) each process is one batch-norm group, as in the official code: the keys'
  images are gathered from all processes, permuted by one permutation that every process shares, each
  process encodes its slice, and the encoded keys are gathered and put back in the original order.
- In one process the batch is cut into `splits` groups, each encoded by its own forward pass, which
  simulates `splits` GPUs as the authors' CIFAR-10 demo does with its SplitBatchNorm layer (8 by default):
  the query batch in order, the key batch shuffled first. The running statistics get one update per step
  with the groups' average statistics, as SplitBatchNorm's do, not one per group.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn as nn

from pretrainlab.distributed import gather_no_grad, is_distributed, rank, world_size

Encoder = Callable[[torch.Tensor], torch.Tensor]


def split_encode(encode: Encoder, module: nn.Module, images: torch.Tensor, splits: int) -> torch.Tensor:
    """images (B, ...) -> encode(images) (B, D), each of `splits` consecutive groups encoded on its own.

    Groups keep at least 2 images (batch norm needs two). `module` holds the batch norms `encode` runs: their
    running statistics move once per call, by their momentum m, toward the groups' average statistics.
    """
    groups = images.tensor_split(max(1, min(splits, images.shape[0] // 2)))
    if len(groups) == 1:
        return encode(images)
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    saved = [(norm.momentum, norm.num_batches_tracked.clone()) for norm in norms]
    outputs = []
    try:
        for index, group in enumerate(groups, start=1):
            for norm, (momentum, tracked) in zip(norms, saved, strict=True):
                # momentum None is a cumulative average: its single update would weigh 1 / (steps so far + 1)
                base = momentum if momentum is not None else 1 / (float(tracked) + 1)
                norm.momentum = group_factor(base, index, len(groups))
            outputs.append(encode(group))
    finally:
        for norm, (momentum, tracked) in zip(norms, saved, strict=True):
            norm.momentum = momentum
            norm.num_batches_tracked.copy_(tracked + 1)  # one step, not one per group (not saved for backward)
    return torch.cat(outputs)


def group_factor(momentum: float, index: int, groups: int) -> float:
    """The running-statistics factor for group `index` (1-based) of `groups`, so that the n sequential updates
    r <- (1 - f_k) r + f_k s_k add up to r <- (1 - m) r + m mean_k(s_k), SplitBatchNorm's single update.

    (The in-place updates happen inside batch norm itself: writing the buffers afterwards would invalidate
    the tensors autograd saved.) With c_k = 1 - (n - k) m / n the weight left after group k, f_k = (m / n) / c_k.
    """
    return (momentum / groups) / (1 - (groups - index) * momentum / groups)


@torch.no_grad()
def shuffled_encode(encode: Encoder, module: nn.Module, images: torch.Tensor, splits: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Key encoding with shuffled batch norm: images (B, ...) -> encode(images) (B, D) in the original order,
    each image encoded in a batch-norm group of randomly chosen others (across processes under DDP)."""
    if is_distributed():
        return _shuffled_across_ranks(encode, images)
    permutation = torch.randperm(images.shape[0], generator=generator, device=images.device)
    encoded = split_encode(encode, module, images[permutation], splits)
    return encoded[torch.argsort(permutation)]


def _shuffled_across_ranks(encode: Encoder, images: torch.Tensor) -> torch.Tensor:
    """MoCo's `_batch_shuffle_ddp` / `_batch_unshuffle_ddp`: gather, permute, encode this rank's slice, restore."""
    gathered = gather_no_grad(images)  # (W * B, ...), every rank's batch in rank order
    permutation = torch.randperm(gathered.shape[0], device=images.device)
    dist.broadcast(permutation, src=0)  # one permutation for all ranks: rank 0's
    restore = torch.argsort(permutation)
    own = permutation.view(world_size(), -1)[rank()]  # the gathered rows this rank encodes
    encoded = gather_no_grad(encode(gathered[own]))  # (W * B, D) in permuted order
    return encoded[restore.view(world_size(), -1)[rank()]]
