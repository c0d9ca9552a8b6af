"""iBOT's masked-token self-distillation: the student predicts the teacher's patch distribution at masked patches.

Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", arXiv 2111.07832; the patch-level
loss of DINOv2 (arXiv 2304.07193) and of RAD-DINO (Perez-Garcia et al., arXiv 2401.10815).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pretrainlab.losses.dino import TeacherCentre, soft_cross_entropy
from pretrainlab.losses.full_precision import in_full_precision


class MaskedTokenDistillationLoss(nn.Module):
    """Cross-entropy between the teacher's centred, sharpened patch outputs (on the full image) and the
    student's patch outputs (on the masked image), at the masked patches only.

    Each image's loss is the mean over its masked patches; the loss is the mean over all images, an image
    without masked patches counting zero, as iBOT's official code, DINOv2 and lightly's `IBOTPatchLoss` do.
    (Averaging over the masked images only would scale the term by 1 / the share of masked images, 2x at
    iBOT's mask probability 0.5, and make its weight vary with how many images a batch happens to mask.)
    The patch centre is separate from the [CLS]-level centre (iBOT, section 3) and follows every teacher patch
    token, as iBOT's code (DINOv2 and lightly update it with the masked tokens only).

    Args:
        out_dim: the patch head's output size K.
        student_temperature: 0.1 in iBOT.
        centre_momentum: 0.9 in iBOT.
    """

    def __init__(self, out_dim: int, student_temperature: float = 0.1, centre_momentum: float = 0.9) -> None:
        super().__init__()
        if student_temperature <= 0:
            raise ValueError(f"student temperature must be > 0, got {student_temperature}")
        self.student_temperature = student_temperature
        self.centre = TeacherCentre(out_dim, centre_momentum)

    @in_full_precision
    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                teacher_temperature: float) -> torch.Tensor:
        """student_logits, teacher_logits: (B, N, K); mask: (B, N) bool, True = hidden from the student."""
        probabilities = self.centre.probabilities(teacher_logits, teacher_temperature)  # (B, N, K)
        per_token = soft_cross_entropy(probabilities, student_logits, self.student_temperature)  # (B, N)
        weights = mask.float()
        masked_count = weights.sum(dim=1)  # (B,)
        per_image = (per_token * weights).sum(dim=1) / masked_count.clamp(min=1.0)  # (B,), 0 where nothing hidden
        self.centre.update(teacher_logits.flatten(0, 1))
        # Without any mask this is 0 yet still depends on the student, so DDP's gradient hooks stay connected.
        return per_image.mean()
