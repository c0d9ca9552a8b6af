"""A full SimCLR training step, pretrainlab vs lightly, side by side in one process, same backbone and batch.

    python -m bench.simclr_step_vs_lightly [--backbone tinycnn] [--batch 256] [--rounds 10]

lightly: per-sample SimCLRTransform (input_size=32, gaussian_blur=0.0) on PIL images, collation,
backbone, SimCLRProjectionHead, NTXentLoss, SGD step. pretrainlab: the uint8 batch, batched views,
the same backbone architecture, its SimCLR method (same head sizes, same temperature), SGD step via
the training loop's step function. Both start from identical backbone weights.
Prints medians and the ratio (needs `pip install -e ".[bench]"`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from PIL import Image

from bench.common import (
    SIMCLR_HIDDEN,
    SIMCLR_OUT,
    SIMCLR_TEMPERATURE,
    cifar_images,
    interleaved_medians,
    print_step_medians,
    simclr_train_step,
)
from pretrainlab.backbones import create_backbone


def lightly_step_function(backbone_name: str, pil_images: list[Image.Image]):  # noqa: ANN201
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    torch.manual_seed(0)
    backbone = create_backbone(backbone_name, 32, 3)
    head = SimCLRProjectionHead(backbone.embed_dim, SIMCLR_HIDDEN, SIMCLR_OUT)
    model = torch.nn.Sequential(backbone, head)
    transform, criterion = SimCLRTransform(input_size=32, gaussian_blur=0.0), NTXentLoss(SIMCLR_TEMPERATURE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        pairs = [transform(image) for image in pil_images]  # what a DataLoader worker does, image by image
        view_a, view_b = torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])
        loss = criterion(model(view_a), model(view_b))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tinycnn", help="tinycnn (0.09M parameters) or e.g. resnet18")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    images, description = cifar_images(args.batch)
    with tempfile.TemporaryDirectory() as run_dir:
        steps = {
            "lightly": lightly_step_function(args.backbone, [Image.fromarray(image) for image in images]),
            "pretrainlab": simclr_train_step(args.backbone, torch.from_numpy(images), Path(run_dir)),
        }
        medians = interleaved_medians(steps, args.rounds)
    print(f"data: {description}; backbone {args.backbone}; {args.batch} images x 2 views at 32 px; "
          f"{torch.get_num_threads()} threads; median of {args.rounds} interleaved rounds")
    print_step_medians(medians, args.batch)
    print(f"speed-up: {medians['lightly'] / medians['pretrainlab']:.2f}x")


if __name__ == "__main__":
    main()
