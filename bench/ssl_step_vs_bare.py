"""The cost of self-supervision on top of the backbone: a full SimCLR step vs the bare two-view step.

    python -m bench.ssl_step_vs_bare [--backbone resnet18_cifar] [--batch 512] [--rounds 20] [--compile]

bare: two ready-made, normalised float views (B, 3, 32, 32) go through the backbone (one pass over both),
a trivial loss on the pooled features, backward, SGD step: the floor any SSL library can reach.
pretrainlab: the uint8 batch in, batched views made on the device, SimCLR's projection head and NT-Xent,
backward, SGD step, through the Trainer's own `train_step`. Both share precision (bf16 autocast on a
GPU), channels_last and, with --compile, torch.compile. Prints images/s of each and the ratio
pretrainlab / bare (1.0 means the views, head and loss are free).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.common import cifar_images, interleaved_medians, print_step_medians, simclr_train_step
from pretrainlab.backbones import create_backbone


def synchronized(step, device: torch.device):  # noqa: ANN001, ANN201
    """The step, then a wait for the device, so wall time covers the work and not only its launch."""

    def run() -> None:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def bare_step(backbone_name: str, batch: int, device: torch.device, precision: torch.dtype | None,
              compile_model: bool):  # noqa: ANN201
    torch.manual_seed(0)
    backbone = create_backbone(backbone_name, 32, 3).to(device).to(memory_format=torch.channels_last)
    model = torch.compile(backbone) if compile_model else backbone
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.01, momentum=0.9)
    views = torch.randn(2 * batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast(device.type, dtype=precision or torch.float32, enabled=precision is not None):
            loss = model(views).float().pow(2).mean()  # (2B, D) -> scalar: no head, no views
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18_cifar")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    images, description = cifar_images(args.batch)
    uint8 = torch.from_numpy(images).to(device)
    with tempfile.TemporaryDirectory() as run_dir:
        steps = {
            "bare": synchronized(bare_step(args.backbone, args.batch, device,
                                           torch.bfloat16 if precision == "bf16" else None, args.compile), device),
            "pretrainlab": synchronized(simclr_train_step(args.backbone, uint8, Path(run_dir), precision,
                                                          args.compile), device),
        }
        started = time.perf_counter()
        medians = interleaved_medians(steps, args.rounds, warmup=5 if args.compile else 2)
    print(f"data: {description}; {args.backbone}; {args.batch} images x 2 views at 32 px; {device}; {precision}; "
          f"channels_last; compile={args.compile}; median of {args.rounds} interleaved rounds "
          f"({time.perf_counter() - started:.0f} s in all)")
    print_step_medians(medians, args.batch)
    print(f"pretrainlab / bare (throughput): {medians['bare'] / medians['pretrainlab']:.2f}")


if __name__ == "__main__":
    main()
