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

from bench.common import cifar_images, interleaved_medians
from pretrainlab.backbones import create_backbone
from pretrainlab.data.source import ImageSet
from pretrainlab.methods import MethodContext
from pretrainlab.methods.base import ViewOptions
from pretrainlab.methods.simclr import SimCLR, SimCLRConfig
from pretrainlab.train.config import TrainConfig
from pretrainlab.train.loop import Trainer

HIDDEN, OUT, TEMPERATURE = 512, 128, 0.5
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def lightly_step_function(backbone_name: str, pil_images: list[Image.Image]):  # noqa: ANN201
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    torch.manual_seed(0)
    backbone = create_backbone(backbone_name, 32, 3)
    head = SimCLRProjectionHead(backbone.embed_dim, HIDDEN, OUT)
    model = torch.nn.Sequential(backbone, head)
    transform, criterion = SimCLRTransform(input_size=32, gaussian_blur=0.0), NTXentLoss(TEMPERATURE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        pairs = [transform(image) for image in pil_images]  # what a DataLoader worker does, image by image
        view_a, view_b = torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])
        loss = criterion(model(view_a), model(view_b))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def our_step_function(backbone_name: str, images: torch.Tensor, run_dir: Path):  # noqa: ANN201
    torch.manual_seed(0)
    backbone = create_backbone(backbone_name, 32, 3)
    options = ViewOptions(crop_min_scale=0.08, jitter_strength=1.0, grayscale_p=0.2, blur_p=0.0)
    config = SimCLRConfig(temperature=TEMPERATURE, projection_dim=OUT, hidden_dim=HIDDEN, views=options)
    context = MethodContext(32, 3, IMAGENET_MEAN, IMAGENET_STD)
    method = SimCLR(backbone, config, context)
    train = TrainConfig(epochs=1, batch_size=len(images), lr=0.06, lr_scaling="none", warmup_epochs=0)
    trainer = Trainer(method, ImageSet(images.numpy()), train, run_dir, torch.device("cpu"), show_progress=False)
    state = {"step": 0}

    def step() -> None:
        trainer.train_step(state["step"], images, None)
        state["step"] += 1

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
            "pretrainlab": our_step_function(args.backbone, torch.from_numpy(images), Path(run_dir)),
        }
        medians = interleaved_medians(steps, args.rounds)
    print(f"data: {description}; backbone {args.backbone}; {args.batch} images x 2 views at 32 px; "
          f"{torch.get_num_threads()} threads; median of {args.rounds} interleaved rounds")
    for name, seconds in medians.items():
        print(f"{name:12s}: {seconds:.3f} s per step, {args.batch / seconds:.0f} images/s")
    print(f"speed-up: {medians['lightly'] / medians['pretrainlab']:.2f}x")


if __name__ == "__main__":
    main()
