"""Cross-correlation, variance-covariance, supervised contrastive and Sinkhorn computations on 2 gloo processes
equal the 1-process result on the same global batch (loss and gradients, as DDP averages them)."""

from __future__ import annotations

import pytest
import torch
from ddp_utils import run_distributed

from pretrainlab.losses import BarlowTwinsLoss, LeaveOneOutKNNLoss, SupConLoss, VICRegLoss, sinkhorn_knopp

WORLD_SIZE = 2


def _pair_losses() -> dict:
    return {"barlowtwins": BarlowTwinsLoss(0.05), "vicreg": VICRegLoss()}


def _on_shard(rank: int, world_size: int, z_a: torch.Tensor, z_b: torch.Tensor, labels: torch.Tensor) -> dict:
    """Every loss on this rank's slice; losses and gradients are reduced as DDP would (mean over ranks)."""
    import torch.distributed as dist

    local = z_a.shape[0] // world_size
    part = slice(rank * local, (rank + 1) * local)
    results = {}

    def record(name: str, loss: torch.Tensor, *inputs: torch.Tensor) -> None:
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        results[name] = {"loss": mean_loss / world_size, "grads": [x.grad / world_size for x in inputs]}

    for name, criterion in _pair_losses().items():
        shard_a, shard_b = (z[part].clone().requires_grad_(True) for z in (z_a, z_b))
        record(name, criterion(shard_a, shard_b), shard_a, shard_b)
    features = torch.stack([z_a, z_b], dim=1)[part].clone().requires_grad_(True)  # (B / W, 2, D)
    record("supcon", SupConLoss(0.2)(features, labels[part]), features)
    queries = z_a[part].clone().requires_grad_(True)
    # LOOK as the method runs it: the gathered batch (candidates) with this rank's queries left out.
    from pretrainlab.distributed import gather_no_grad, gather_with_grad

    candidates = gather_with_grad(queries)
    self_index = torch.arange(local) + rank * local
    record("look", LeaveOneOutKNNLoss(3, 0.2)(queries, labels[part], candidates, gather_no_grad(labels[part]),
                                              self_index), queries)
    results["sinkhorn"] = sinkhorn_knopp(z_a[part] @ z_b[:5].T, 0.1, 3)
    return results


@pytest.fixture(scope="module")
def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    z_a = torch.randn(8, 6, generator=generator)
    z_b = 0.5 * z_a + torch.randn(8, 6, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 2, 2])
    return z_a, z_b, labels


@pytest.fixture(scope="module")
def distributed_results(global_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[dict]:
    return run_distributed(_on_shard, WORLD_SIZE, *global_batch)


def _reference(name: str, z_a: torch.Tensor, z_b: torch.Tensor, labels: torch.Tensor) -> dict:
    if name in _pair_losses():
        inputs = [z_a.clone().requires_grad_(True), z_b.clone().requires_grad_(True)]
        loss = _pair_losses()[name](*inputs)
    elif name == "supcon":
        inputs = [torch.stack([z_a, z_b], dim=1).requires_grad_(True)]
        loss = SupConLoss(0.2)(inputs[0], labels)
    else:
        inputs = [z_a.clone().requires_grad_(True)]
        loss = LeaveOneOutKNNLoss(3, 0.2)(inputs[0], labels, inputs[0], labels, torch.arange(len(labels)))
    loss.backward()
    return {"loss": loss.detach(), "grads": [x.grad for x in inputs]}


@pytest.mark.parametrize("name", ["barlowtwins", "vicreg", "supcon", "look"])
def test_two_processes_equal_one_process(name: str, global_batch: tuple, distributed_results: list[dict]) -> None:
    reference = _reference(name, *global_batch)
    for result in distributed_results:
        torch.testing.assert_close(result[name]["loss"], reference["loss"], rtol=1e-5, atol=1e-6)
    for index, expected in enumerate(reference["grads"]):
        gathered = torch.cat([result[name]["grads"][index] for result in distributed_results])
        torch.testing.assert_close(gathered, expected, rtol=1e-4, atol=1e-6)


def test_sinkhorn_partitions_the_global_batch(global_batch: tuple, distributed_results: list[dict]) -> None:
    z_a, z_b, _ = global_batch
    expected = sinkhorn_knopp(z_a @ z_b[:5].T, 0.1, 3)
    torch.testing.assert_close(torch.cat([result["sinkhorn"] for result in distributed_results]), expected,
                               rtol=1e-5, atol=1e-6)
