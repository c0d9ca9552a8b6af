"""PGD-10 images/s: pretrainlab's robust-accuracy path vs torchattacks called directly on the same model.

    flock /tmp/pretrainlab-bench.lock python -m bench.attack_pgd_speed [--backbone tinycnn] [--batch 256] [--rounds 5]

Both sides attack the same `AttackedModel` (backbone + a linear head, CIFAR-10 normalisation inside) with
L-inf PGD, eps 8/255, 10 steps, step 2/255, random start, on the same CIFAR-10 (JPEG q75) images at 32 px,
then predict the adversarial batch. pretrainlab's path (`robust_accuracy`) also predicts the clean batch,
checks every image's budget and forks the random generator; this measures what that costs. Prints medians of
interleaved rounds and the ratio.
"""

from __future__ import annotations

import argparse

import torch
import torchattacks

from bench.common import IMAGENET_MEAN, IMAGENET_STD, cifar_images, interleaved_medians, print_step_medians
from pretrainlab.attack.input_space import AttackSettings
from pretrainlab.attack.model import AttackedModel, BackboneWithHead
from pretrainlab.attack.robustness import robust_accuracy
from pretrainlab.backbones import create_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tinycnn")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = create_backbone(args.backbone, 32, 3)
    model = AttackedModel(BackboneWithHead(backbone, torch.nn.Linear(backbone.embed_dim, 10)),
                          torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)).eval()
    images_uint8, described = cifar_images(args.batch)
    images = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div(255).contiguous()
    labels = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(0))
    eps = 8 / 255

    def pretrainlab_pgd() -> None:
        robust_accuracy(model, images, labels, "pgd", [eps], "linf", AttackSettings(steps=10), 10, 0, args.batch)

    def torchattacks_pgd() -> None:
        torch.manual_seed(0)
        adversarial = torchattacks.PGD(model, eps=eps, alpha=2 / 255, steps=10)(images, labels)
        with torch.no_grad():
            model(adversarial).argmax(1)

    medians = interleaved_medians({"pretrainlab": pretrainlab_pgd, "torchattacks": torchattacks_pgd}, args.rounds,
                                  warmup=1)
    print(f"PGD-10 L-inf 8/255, {args.backbone} at 32 px, batch {args.batch}, {described}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    print_step_medians(medians, args.batch)
    print(f"ratio pretrainlab / torchattacks images/s: {medians['torchattacks'] / medians['pretrainlab']:.2f}")


if __name__ == "__main__":
    main()
