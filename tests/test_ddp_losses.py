"""Contrastive losses gathered over 2 gloo processes equal the 1-process loss on the same global batch."""

from __future__ import annotations

import torch
from ddp_utils import run_distributed

from pretrainlab.losses import NTXentLoss


def _ntxent_on_shard(rank: int, world_size: int, z_a: torch.Tensor, z_b: torch.Tensor) -> dict:
    import torch.distributed as dist

    local = z_a.shape[0] // world_size
    shard_a = z_a[rank * local : (rank + 1) * local].clone().requires_grad_(True)
    shard_b = z_b[rank * local : (rank + 1) * local].clone().requires_grad_(True)
    loss = NTXentLoss(0.5)(shard_a, shard_b)
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    # DDP averages gradients over ranks: the gradient of the mean of the per-rank losses.
    return {"loss": mean_loss / world_size, "grad_a": shard_a.grad / world_size, "grad_b": shard_b.grad / world_size}


def test_ntxent_two_processes_equal_one_process() -> None:
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    reference_a, reference_b = z_a.clone().requires_grad_(True), z_b.clone().requires_grad_(True)
    reference = NTXentLoss(0.5)(reference_a, reference_b)
    reference.backward()
    results = run_distributed(_ntxent_on_shard, 2, z_a, z_b)
    for result in results:
        torch.testing.assert_close(result["loss"], reference.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["grad_a"] for r in results]), reference_a.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["grad_b"] for r in results]), reference_b.grad, rtol=1e-4, atol=1e-6)
