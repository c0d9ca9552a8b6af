"""A minimal SimCLR written apart from pretrainlab's training code: the reference issue 9 bisects against.

Only the data (the same source and split) and the timm model registry come from pretrainlab; views,
head, loss, optimiser, schedule and kNN are written here in plain torch, so a difference between this
script and `pretrainlab pretrain --method simclr` on the same settings points at pretrainlab's code.

    python bench/simclr_reference.py --backbone resnet18 --epochs 4 --knn-every 2
    python bench/simclr_reference.py --views pretrainlab      # swap in one pretrainlab part at a time

Every switch names one difference between a typical independent SimCLR and the pretrainlab recipe; the
sweep in bench/resnet_recipes.py flips them one at a time. Prints one JSON line per kNN measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2

import pretrainlab.backbones.small  # noqa: F401  (registers resnet18_cifar and tinycnn in timm)
from pretrainlab.data import load_source
from pretrainlab.data.subsets import limit_source


def reference_transform(size: int, crop_min: float, jitter: float, jitter_p: float, mean: float,
                        std: float, flip_p: float = 0.5) -> v2.Compose:
    """torchvision's per-image SimCLR views of a grey uint8 image (1, H, W)."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(crop_min, 1.0), antialias=True),
        v2.RandomHorizontalFlip(flip_p),
        v2.RandomApply([v2.ColorJitter(brightness=0.8 * jitter, contrast=0.8 * jitter)], p=jitter_p),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([mean], [std]),
    ])


def reference_views(images: torch.Tensor, transform: v2.Compose) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, W, 1) uint8 -> two (B, 1, S, S) float views, one image at a time."""
    chw = images.permute(0, 3, 1, 2)
    return (torch.stack([transform(image) for image in chw]), torch.stack([transform(image) for image in chw]))


def pretrainlab_views(images: torch.Tensor, args: argparse.Namespace, generator: torch.Generator,
                      mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same two views made by pretrainlab's batched view code (one switch of the bisection)."""
    from pretrainlab.data.views import make_view_set, to_float
    from pretrainlab.methods.base import ViewOptions

    spec = ViewOptions(crop_min_scale=args.crop_min, jitter_strength=args.jitter, jitter_p=args.jitter_p,
                       flip_p=args.flip_p).spec(args.img_size, count=2)  # flip_p: --flip-p 0 held for both view codes
    first, second = make_view_set(to_float(images), spec, generator, mean, std)
    return first.images, second.images


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """z: (2B, D), rows i and i + B are the two views of image i."""
    z = F.normalize(z, dim=1)
    batch = z.shape[0] // 2
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(batch) + batch, torch.arange(batch)])
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def features(model: nn.Module, images: np.ndarray, size: int, mean: float, std: float) -> torch.Tensor:
    """(N, H, W, 1) uint8 -> (N, D) pooled features, eval mode, whole images resized to `size`."""
    model.eval()
    out = []
    for start in range(0, len(images), 500):
        x = torch.from_numpy(images[start:start + 500]).permute(0, 3, 1, 2).float() / 255
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(model((x - mean) / std))
    model.train()
    return torch.cat(out)


def knn(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
        k: int = 20, temperature: float = 0.07) -> float:
    """Weighted cosine kNN top-1 (%), votes exp(sim / T)."""
    train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    similarity, index = (test @ train.T).topk(k, dim=1)
    votes = torch.zeros(len(test), int(train_labels.max()) + 1)
    votes.scatter_add_(1, train_labels[index], (similarity / temperature).exp())
    return float((votes.argmax(1) == test_labels).float().mean() * 100)


def parameter_groups(model: nn.Module, weight_decay: float, exclude_bn_bias: bool) -> list[dict]:
    decay = [p for p in model.parameters() if p.ndim > 1 or not exclude_bn_bias]
    rest = [p for p in model.parameters() if p.ndim <= 1 and exclude_bn_bias]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class Lars(torch.optim.SGD):
    """SGD whose decayed (matrix) parameters take steps scaled by trust * ||w|| / ||g + wd w||."""

    def __init__(self, groups: list[dict], lr: float, trust: float) -> None:
        super().__init__(groups, lr=lr, momentum=0.9)
        self.trust = trust

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
        for group in self.param_groups:
            if group["weight_decay"] == 0:
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.grad.add_(p, alpha=group["weight_decay"])
                ratio = self.trust * p.norm() / (p.grad.norm() + 1e-8)
                p.grad.mul_(torch.where(p.norm() > 0, ratio, torch.ones_like(ratio)))
        saved = [g["weight_decay"] for g in self.param_groups]
        for group in self.param_groups:
            group["weight_decay"] = 0.0
        super().step()
        for group, value in zip(self.param_groups, saved, strict=True):
            group["weight_decay"] = value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.3, help="absolute, not scaled")
    parser.add_argument("--optimizer", choices=("sgd", "lars", "adamw"), default="sgd")
    parser.add_argument("--lars-trust", type=float, default=0.02)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--decay-bn-bias", action="store_true", help="weight decay on 1-d parameters too")
    parser.add_argument("--warmup-epochs", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--head-hidden", type=int, default=512)
    parser.add_argument("--head-out", type=int, default=128)
    parser.add_argument("--crop-min", type=float, default=0.2)
    parser.add_argument("--jitter", type=float, default=0.5)
    parser.add_argument("--flip-p", type=float, default=0.5, help="0 for data a mirror changes (digits)")
    parser.add_argument("--jitter-p", type=float, default=0.8)
    parser.add_argument("--bn", choices=("concat", "per-view"), default="per-view",
                        help="batch statistics over both views at once, or each view apart")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--views", choices=("reference", "pretrainlab"), default="reference")
    parser.add_argument("--knn-every", type=int, default=2)
    parser.add_argument("--stop-epoch", type=int, default=0,
                        help="stop after this epoch (with a kNN report), the schedule still that of --epochs")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.manual_seed(args.seed)
    source = limit_source(load_source(args.data), args.max_train)
    train_images, test_images = source.train.images, source.test.images
    train_labels = torch.from_numpy(np.asarray(source.train.labels, dtype=np.int64))
    test_labels = torch.from_numpy(np.asarray(source.test.labels, dtype=np.int64))
    mean = float(train_images.mean() / 255)
    std = float(train_images.std() / 255)
    model = timm.create_model(args.backbone, pretrained=False, num_classes=0, in_chans=1, zero_init_last=False)
    head = nn.Sequential(nn.Linear(model.num_features, args.head_hidden, bias=False), nn.BatchNorm1d(args.head_hidden),
                         nn.ReLU(inplace=True), nn.Linear(args.head_hidden, args.head_out))
    net = nn.Sequential(model, head)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    groups = parameter_groups(net, args.weight_decay, not args.decay_bn_bias)
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=0.9)
    elif args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=args.lr)
    else:
        optimizer = Lars(groups, lr=args.lr, trust=args.lars_trust)
    transform = reference_transform(args.img_size, args.crop_min, args.jitter, args.jitter_p, mean, std, args.flip_p)
    generator = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = len(train_images) // args.batch_size
    total, warmup = steps_per_epoch * args.epochs, round(args.warmup_epochs * steps_per_epoch)

    def report(epoch: int, started: float) -> None:
        accuracy = knn(features(model, train_images, args.img_size, mean, std), train_labels,
                       features(model, test_images, args.img_size, mean, std), test_labels)
        print(json.dumps({"epoch": epoch, "knn_top1": round(accuracy, 2), "seconds": round(time.time() - started)}),
              flush=True)

    started = time.time()
    report(0, started)
    step = 0
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(train_images), generator=generator)
        for batch_index in range(steps_per_epoch):
            lr = args.lr * (step + 1) / warmup if step < warmup else \
                args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for group in optimizer.param_groups:
                group["lr"] = lr
            chosen = order[batch_index * args.batch_size:(batch_index + 1) * args.batch_size]
            images = torch.from_numpy(train_images[chosen.numpy()])
            if args.views == "reference":
                view_a, view_b = reference_views(images, transform)
            else:
                view_a, view_b = pretrainlab_views(images, args, generator, torch.tensor([mean]), torch.tensor([std]))
            if args.channels_last:
                view_a, view_b = (v.contiguous(memory_format=torch.channels_last) for v in (view_a, view_b))
            concat = args.bn == "concat"  # batch statistics over both views at once, or each view apart
            z = net(torch.cat([view_a, view_b])) if concat else torch.cat([net(view_a), net(view_b)])
            loss = nt_xent(z, args.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        print(json.dumps({"epoch": epoch, "loss": round(float(loss), 4), "lr": round(lr, 5)}), flush=True)
        if epoch % args.knn_every == 0 or epoch in (args.epochs, args.stop_epoch):
            report(epoch, started)
        if epoch == args.stop_epoch:
            break


if __name__ == "__main__":
    main()
