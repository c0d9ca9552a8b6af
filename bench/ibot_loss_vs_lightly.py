"""The iBOT masked-token loss, pretrainlab vs lightly 1.6.0's IBOTPatchLoss, on identical tensors.

    python -m bench.ibot_loss_vs_lightly

Issue 10's reproducer: 4 images of 3x3 patches, 2 of them masked (3 of 9 patches each), teacher
temperature 0.04, student temperature 0.1, 20 prototypes, a zero centre, seed 0. Prints both values and
their ratio (1.00 since the loss divides by all images; 2.00 before). Needs `pip install -e ".[bench]"`.
"""

from __future__ import annotations

import torch

from pretrainlab.losses import MaskedTokenDistillationLoss


def main() -> None:
    from lightly.loss import IBOTPatchLoss

    generator = torch.Generator().manual_seed(0)
    student = torch.randn(4, 9, 20, generator=generator)  # (B, N, K)
    teacher = torch.randn(4, 9, 20, generator=generator)
    mask = torch.zeros(4, 9, dtype=torch.bool)
    mask[0, [0, 4, 8]] = True
    mask[2, [1, 2, 3]] = True
    ours = float(MaskedTokenDistillationLoss(20, student_temperature=0.1)(student, teacher, mask, 0.04))
    # lightly takes the masked tokens flattened, (masked tokens, K), and the mask as (B, H, W).
    reference = float(IBOTPatchLoss(20, teacher_temp=0.04, student_temp=0.1)(teacher[mask], student[mask],
                                                                             mask.view(4, 3, 3)))
    print(f"pretrainlab {ours:.6f}  lightly {reference:.6f}  ratio {ours / reference:.4f}")


if __name__ == "__main__":
    main()
