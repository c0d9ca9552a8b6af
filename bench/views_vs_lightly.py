"""Batched views on the device vs lightly's per-sample SimCLRTransform, side by side in one process.

    python bench/views_vs_lightly.py [--batch 256] [--rounds 15]

Both make two SimCLR views (crop scale 0.08-1, flip 0.5, colour jitter p=0.8 strength 1, grayscale
0.2, no blur, normalisation) of the same real CIFAR-10 images at 32 px. lightly's pipeline runs the
way a DataLoader worker runs it: PIL image in, one image at a time, then collation into a batch.
Prints the median seconds per batch of each and the speed-up ratio (needs `pip install -e ".[bench]"`).
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image

from bench.common import cifar_images, interleaved_medians
from pretrainlab.data.views import to_float
from pretrainlab.methods.base import ViewOptions

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    from lightly.transforms import SimCLRTransform

    images, description = cifar_images(args.batch)
    pil_images = [Image.fromarray(image) for image in images]
    lightly_transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)

    def lightly_views() -> None:
        pairs = [lightly_transform(image) for image in pil_images]
        torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])

    spec = ViewOptions(crop_min_scale=0.08, jitter_strength=1.0, grayscale_p=0.2, blur_p=0.0).spec(32, count=2)
    batch = torch.from_numpy(images)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    generator = torch.Generator().manual_seed(0)
    from pretrainlab.data.views import make_view_set

    def our_views() -> None:  # what Method.prepare_batch does for SimCLR's two views
        make_view_set(to_float(batch), spec, generator, mean, std)

    medians = interleaved_medians({"lightly": lightly_views, "pretrainlab": our_views}, args.rounds)
    print(f"data: {description}; {args.batch} images x 2 views at 32 px; {torch.get_num_threads()} threads; "
          f"median of {args.rounds} interleaved rounds")
    print(f"lightly SimCLRTransform, per sample : {medians['lightly']:.4f} s per batch")
    print(f"pretrainlab batched views           : {medians['pretrainlab']:.4f} s per batch")
    print(f"speed-up: {medians['lightly'] / medians['pretrainlab']:.1f}x")


if __name__ == "__main__":
    main()
