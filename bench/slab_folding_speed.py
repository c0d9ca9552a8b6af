"""SLAB at inference: the trained network with its RepBN layers, and the same network with them folded into the
next linear layers (`timm.utils.reparameterize_model`), against a LayerNorm ViT of the same size.

    flock /tmp/pretrainlab-bench.lock python -m bench.slab_folding_speed [--batch 256 --rounds 15]

Medians of interleaved rounds (CPU, fp32, eval mode, 32 px, 1 channel); the outputs of the folded and unfolded
SLAB are checked to agree first.
"""

from __future__ import annotations

import argparse

import timm
import torch
from timm.utils.model import reparameterize_model

import pretrainlab.backbones  # noqa: F401  (registers the architectures)
from bench.common import interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--backbone", default="slab_nano_patch4")
    args = parser.parse_args()
    torch.manual_seed(0)
    slab = timm.create_model(args.backbone, num_classes=0, in_chans=1).eval()
    folded = reparameterize_model(slab)
    vit = timm.create_model("vit_nano_patch4", num_classes=0, in_chans=1, img_size=32).eval()
    images = torch.randn(args.batch, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(images), slab(images), atol=1e-4, rtol=1e-4)

        def run(model: torch.nn.Module):  # noqa: ANN202
            return lambda: model(images)

        medians = interleaved_medians({"slab": run(slab), "slab folded": run(folded), "vit": run(vit)}, args.rounds)
    for name, seconds in medians.items():
        print(f"{name:12s} {seconds * 1000:8.1f} ms per {args.batch} images  {args.batch / seconds:8.0f} images/s  "
              f"x{medians['slab'] / seconds:.2f} vs unfolded SLAB")


if __name__ == "__main__":
    main()
