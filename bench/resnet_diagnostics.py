"""Issue 9's diagnostics of a trained resnet18 against the random one, at 32 px (`builtin` by default).

For each backbone (a `backbone.safetensors` file, or `random` for the seed-0 init every run starts from):
kNN (k=20, T=0.07) on the global average of every stage's feature map, and the last stage's kNN again
after every batch-norm statistic is re-estimated on plain whole training images (does eval mode's running
statistics of augmented views explain a low kNN?). `--pixels` adds kNN on raw pixels.

    python bench/resnet_diagnostics.py random runs/bench-resnet/warmup10%-crop0.3/backbone.safetensors --pixels
    python bench/resnet_diagnostics.py random --data npz:../../shared/data/fashion_mnist.npz --max-train 2000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pretrainlab.backbones.factory import create_backbone, load_backbone
from pretrainlab.data import load_source
from pretrainlab.data.subsets import limit_source
from pretrainlab.data.views import resize_for_eval
from pretrainlab.eval.knn import as_labels, knn_accuracy


def stage_features(backbone: torch.nn.Module, images, mean: torch.Tensor, std: torch.Tensor) -> list[torch.Tensor]:
    """(N, H, W, C) uint8 -> one (N, C_i) tensor per stage: the global average of its feature map."""
    out: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(images), 500):
            x = resize_for_eval(torch.from_numpy(images[start:start + 500]), 32, mean, std)
            pooled = [m.mean(dim=(2, 3)) for m in backbone.feature_maps(x)]
            out = [[p] for p in pooled] if not out else [seen + [p] for seen, p in zip(out, pooled, strict=True)]
    return [torch.cat(parts) for parts in out]


def recalibrate(backbone: torch.nn.Module, images, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Batch-norm running statistics re-estimated (cumulative average) on plain whole images."""
    for module in backbone.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    backbone.train()
    with torch.no_grad():
        for start in range(0, len(images), 250):
            backbone.pooled(resize_for_eval(torch.from_numpy(images[start:start + 250]), 32, mean, std))
    backbone.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbones", nargs="+", help="backbone.safetensors files, or 'random'")
    parser.add_argument("--pixels", action="store_true")
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--max-train", type=int, default=None, help="the class-balanced subset `pretrain` used")
    args = parser.parse_args()
    source = limit_source(load_source(args.data), args.max_train)
    mean, std = (torch.tensor(v) for v in source.channel_stats())
    train_labels, test_labels = as_labels(source.train.labels), as_labels(source.test.labels)

    def knn(train: torch.Tensor, test: torch.Tensor) -> float:
        return round(knn_accuracy(train, train_labels, test, test_labels, k=20)[0], 1)

    if args.pixels:
        flat = [torch.from_numpy(s.images).float().flatten(1) for s in (source.train, source.test)]
        print(f"pixels: kNN {knn(*flat)}")
    for name in args.backbones:
        if name == "random":
            torch.manual_seed(0)  # the init `pretrain --seed 0` starts from
            backbone = create_backbone("resnet18", 32, source.channels)
        else:
            backbone = load_backbone(Path(name))
        backbone.eval()
        stages = [knn(a, b) for a, b in zip(stage_features(backbone, source.train.images, mean, std),
                                            stage_features(backbone, source.test.images, mean, std), strict=True)]
        recalibrate(backbone, source.train.images, mean, std)
        last = knn(stage_features(backbone, source.train.images, mean, std)[-1],
                   stage_features(backbone, source.test.images, mean, std)[-1])
        print(f"{name}: kNN per stage (stem, stage 1-4) {stages}; last stage after BN re-estimation {last}")


if __name__ == "__main__":
    main()
