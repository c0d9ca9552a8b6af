"""CLIP's symmetric InfoNCE against a naive reference, and 2 gloo processes against 1 process."""

from __future__ import annotations

import math

import torch
from ddp_utils import run_distributed

from pretrainlab.losses.clip import CLIPLoss


def naive_clip_loss(image: torch.Tensor, text: torch.Tensor, scale: float, ids: list[int] | None = None) -> float:
    """Loops over pairs: -log softmax of each image's row and each text's row, positives = equal captions."""
    n = len(image)
    image = [row / row.norm() for row in image]
    text = [row / row.norm() for row in text]
    total = 0.0
    for queries, keys in ((image, text), (text, image)):
        for i in range(n):
            logits = [scale * float(queries[i] @ keys[j]) for j in range(n)]
            log_norm = math.log(sum(math.exp(v) for v in logits))
            positives = [j for j in range(n) if (j == i if ids is None else ids[j] == ids[i])]
            total += -sum(logits[j] - log_norm for j in positives) / len(positives)
    return total / (2 * n)


def test_clip_loss_equals_naive_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    image, text = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    for scale in (1.0, 14.3):
        loss = CLIPLoss()(image, text, torch.tensor(scale))
        assert abs(float(loss) - naive_clip_loss(image, text, scale)) < 1e-5


def test_equal_captions_are_positives_of_each_other() -> None:
    generator = torch.Generator().manual_seed(1)
    image, text = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    ids = [7, 3, 7, 1, 3, 9]
    loss = CLIPLoss()(image, text, torch.tensor(10.0), torch.tensor(ids))
    assert abs(float(loss) - naive_clip_loss(image, text, 10.0, ids)) < 1e-5
    distinct = CLIPLoss()(image, text, torch.tensor(10.0), torch.arange(6))
    torch.testing.assert_close(distinct, CLIPLoss()(image, text, torch.tensor(10.0)))


def _clip_on_shard(rank: int, world_size: int, image: torch.Tensor, text: torch.Tensor, ids: torch.Tensor) -> dict:
    import torch.distributed as dist

    local = image.shape[0] // world_size
    rows = slice(rank * local, (rank + 1) * local)
    shard_image, shard_text = image[rows].clone().requires_grad_(True), text[rows].clone().requires_grad_(True)
    scale = torch.tensor(12.0, requires_grad=True)
    loss = CLIPLoss()(shard_image, shard_text, scale, ids[rows])
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    scale_grad = scale.grad.clone()
    dist.all_reduce(scale_grad)
    # DDP averages gradients over ranks: the gradient of the mean of the per-rank losses.
    return {"loss": mean_loss / world_size, "image": shard_image.grad / world_size,
            "text": shard_text.grad / world_size, "scale": scale_grad / world_size}


def test_clip_loss_two_processes_equal_one_process() -> None:
    generator = torch.Generator().manual_seed(2)
    image, text = torch.randn(8, 6, generator=generator), torch.randn(8, 6, generator=generator)
    ids = torch.tensor([0, 1, 2, 0, 4, 5, 1, 7])  # equal captions across the two shards
    reference_image, reference_text = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
    scale = torch.tensor(12.0, requires_grad=True)
    reference = CLIPLoss()(reference_image, reference_text, scale, ids)
    reference.backward()
    results = run_distributed(_clip_on_shard, 2, image, text, ids)
    for result in results:
        torch.testing.assert_close(result["loss"], reference.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["scale"], scale.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["image"] for r in results]), reference_image.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["text"] for r in results]), reference_text.grad, rtol=1e-4, atol=1e-6)
