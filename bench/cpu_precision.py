"""bf16 autocast against fp32 for a full SimCLR step on the CPU, side by side in one process.

    python -m bench.cpu_precision [--backbones resnet18_cifar,resnet18,tinycnn] [--batch 128] [--rounds 6]

CPUs with native bf16 dot products (AVX512-BF16 or AMX: AMD Zen 4, Intel Sapphire Rapids and later) run oneDNN's
bf16 convolutions at about twice the fp32 rate; on older CPUs bf16 is emulated and slower than fp32, which is why
`--precision` stays fp32 by default and this script says which kind of CPU it measured. Both candidates are
pretrainlab's own `train_step` (batched views, projection head, NT-Xent, backward, SGD), channels_last, timed
alternately round after round so the machine's noise hits them alike. Prints the median seconds per step of each
and the ratio fp32 / bf16 (above 1: bf16 is faster).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import cifar_images, interleaved_medians, print_step_medians, simclr_train_step
from pretrainlab.backbones import create_backbone
from pretrainlab.errors import PretrainlabError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="resnet18_cifar,resnet18,tinycnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    for backbone in args.backbones.split(","):  # a wrong name stops here, before any timing, in one line
        try:
            create_backbone(backbone, 32, 3)
        except PretrainlabError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    images, description = cifar_images(args.batch)
    uint8 = torch.from_numpy(images)
    print(f"data: {description}; {args.batch} images x 2 views at 32 px; cpu, {torch.get_num_threads()} threads; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"native bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}; median of {args.rounds} interleaved rounds")
    for backbone in args.backbones.split(","):
        with tempfile.TemporaryDirectory() as fp32_dir, tempfile.TemporaryDirectory() as bf16_dir:
            steps = {"fp32": simclr_train_step(backbone, uint8, Path(fp32_dir), "fp32"),
                     "bf16": simclr_train_step(backbone, uint8, Path(bf16_dir), "bf16")}
            medians = interleaved_medians(steps, args.rounds)
        print(f"-- {backbone}")
        print_step_medians(medians, args.batch)
        print(f"fp32 / bf16 (time per step): {medians['fp32'] / medians['bf16']:.2f}")


if __name__ == "__main__":
    main()
