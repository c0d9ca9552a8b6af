"""MoCo v3's loss, DINO's centre, the memory queue and MoCo v2's shuffled BN: 2 gloo processes equal 1 process
on the global batch.

One pair of processes computes everything (spawning is the slow part); each test checks one quantity.
"""

from __future__ import annotations

import pytest
import torch
from ddp_utils import run_distributed

from pretrainlab.losses import DINOLoss, InfoNCELoss
from pretrainlab.methods.parts.queue import MemoryQueue
from pretrainlab.methods.parts.shuffled_bn import shuffled_encode

WORLD_SIZE = 2
TEMPERATURE = 0.2


def inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "queries_1": torch.randn(8, 16, generator=generator), "queries_2": torch.randn(8, 16, generator=generator),
        "keys_1": torch.randn(8, 16, generator=generator), "keys_2": torch.randn(8, 16, generator=generator),
        "teacher": torch.randn(8, 5, generator=generator), "student": torch.randn(8, 5, generator=generator),
        "queue_rows": torch.randn(8, 3, generator=generator),
    }


def mocov3_loss(queries_1, queries_2, keys_1, keys_2) -> torch.Tensor:
    criterion = InfoNCELoss(TEMPERATURE)
    return 2 * TEMPERATURE * (criterion(queries_1, keys_2) + criterion(queries_2, keys_1))


def compute(rank: int, world_size: int, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Everything the tests compare; on one process (rank 0 of 1) it is the reference."""
    import torch.distributed as dist

    local = len(data["queries_1"]) // world_size
    shard = {key: value[rank * local : (rank + 1) * local].clone() for key, value in data.items()}
    scale = 1.0 / world_size  # DDP averages gradients over ranks: the gradient of the mean of rank losses
    results: dict[str, torch.Tensor] = {}

    # MoCo v3: momentum keys carry no gradient (gathered without it), queries do.
    queries = [shard["queries_1"].requires_grad_(True), shard["queries_2"].requires_grad_(True)]
    loss = mocov3_loss(queries[0], queries[1], shard["keys_1"], shard["keys_2"])
    loss.backward()
    results["mocov3_loss"] = loss.detach() * scale
    results["mocov3_grad_1"], results["mocov3_grad_2"] = queries[0].grad * scale, queries[1].grad * scale

    # In-batch InfoNCE whose keys are trained too (gathered with gradients).
    queries = shard["queries_1"].detach().clone().requires_grad_(True)
    keys = shard["keys_1"].clone().requires_grad_(True)
    loss = InfoNCELoss(TEMPERATURE)(queries, keys)
    loss.backward()
    results["trained_keys_loss"] = loss.detach() * scale
    results["trained_keys_query_grad"], results["trained_keys_key_grad"] = queries.grad * scale, keys.grad * scale

    # DINO: the loss is a batch mean, the centre update averages the batch means of all ranks.
    criterion = DINOLoss(5, centre_momentum=0.5)
    results["dino_loss"] = criterion([shard["student"], shard["teacher"]], [shard["teacher"]], 0.04) * scale
    results["dino_centre"] = criterion.centre.centre.clone()

    # The queue receives every rank's rows, rank 0's first.
    queue = MemoryQueue(size=12, dim=3, normalize=False)
    queue.push(shard["queue_rows"])
    results["queue"] = queue.items.clone()

    # MoCo v2's shuffled BN: each rank encodes a slice of the shuffled global batch, the keys come back in order.
    rows = torch.arange(len(shard["queue_rows"]), dtype=torch.float32).view(-1, 1) + 100 * rank  # (B, 1)

    def tag_with_rank(x: torch.Tensor) -> torch.Tensor:  # (n, 1) -> (n, 2): the row and the rank that encoded it
        return torch.cat([x, torch.full((len(x), 1), float(rank))], dim=1)

    results["shuffled_rows"] = rows
    results["shuffled_keys"] = shuffled_encode(tag_with_rank, torch.nn.Identity(), rows, splits=1)

    if world_size > 1:
        for key in ("mocov3_loss", "trained_keys_loss", "dino_loss"):
            dist.all_reduce(results[key])
    return results


@pytest.fixture(scope="module")
def results() -> tuple[dict, list[dict]]:
    data = inputs()
    return compute_seeded(0, 1, data), run_distributed(compute_seeded, WORLD_SIZE, data)


def compute_seeded(rank: int, world_size: int, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # MemoryQueue draws its initial rows: every process and the reference start alike
    return compute(rank, world_size, data)


@pytest.mark.parametrize("key", ["mocov3_loss", "trained_keys_loss", "dino_loss", "dino_centre", "queue"])
def test_value_is_the_same_on_every_rank_as_on_one_process(results, key: str) -> None:
    reference, ranks = results
    for rank_results in ranks:
        torch.testing.assert_close(rank_results[key], reference[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", ["mocov3_grad_1", "mocov3_grad_2", "trained_keys_query_grad", "trained_keys_key_grad"])
def test_gradients_of_the_shards_assemble_the_one_process_gradient(results, key: str) -> None:
    reference, ranks = results
    torch.testing.assert_close(torch.cat([r[key] for r in ranks]), reference[key], rtol=1e-4, atol=1e-6)


def test_ddp_shuffled_bn_sends_keys_to_other_ranks_and_restores_the_original_order(results) -> None:
    _, ranks = results
    for rank_results in ranks:  # every key back at its own row
        torch.testing.assert_close(rank_results["shuffled_keys"][:, :1], rank_results["shuffled_rows"])
    encoded_by = torch.cat([rank_results["shuffled_keys"][:, 1] for rank_results in ranks])  # (W * B,)
    local = len(encoded_by) // WORLD_SIZE
    assert [int((encoded_by == rank).sum()) for rank in range(WORLD_SIZE)] == [local] * WORLD_SIZE
    assert bool((encoded_by[:local] == 1).any())  # some of rank 0's keys were encoded by rank 1: a random mixture
