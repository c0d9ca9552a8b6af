"""DINO's self-distillation loss: cross-entropy between a centred, sharpened teacher and the student.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", arXiv 2104.14294.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.distributed import all_reduce_mean
from pretrainlab.losses.full_precision import in_full_precision


class TeacherCentre(nn.Module):
    """The running mean of the teacher's outputs, subtracted before the teacher's softmax.

    Centring keeps one dimension from dominating (collapse to one prototype) and sharpening (a low
    teacher temperature) keeps the output from going uniform; together they avoid collapse (section 3.1).

    Args:
        dim: output size K.
        momentum: centre <- momentum * centre + (1 - momentum) * batch mean (0.9 in the paper).
    """

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0 <= momentum < 1:
            raise ValueError(f"centre momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("centre", torch.zeros(dim))  # (K,), saved in checkpoints

    def probabilities(self, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """(..., K) -> softmax((logits - centre) / temperature) over K, without gradient."""
        return F.softmax((teacher_logits.detach().float() - self.centre) / temperature, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        """teacher_logits (N, K): the batch mean, averaged over DDP ranks, enters the running centre."""
        batch_mean = all_reduce_mean(teacher_logits.detach().float().mean(dim=0))  # (K,)
        self.centre.mul_(self.momentum).add_(batch_mean, alpha=1 - self.momentum)


def soft_cross_entropy(teacher_probabilities: torch.Tensor, student_logits: torch.Tensor,
                       student_temperature: float) -> torch.Tensor:
    """-sum_k p_teacher * log softmax(student / temperature), per row: (..., K) -> (...)."""
    log_student = F.log_softmax(student_logits.float() / student_temperature, dim=-1)
    return -(teacher_probabilities * log_student).sum(dim=-1)


def summed(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The element-wise sum of equally shaped tensors (the one tensor itself, uncopied, when alone)."""
    return tensors[0] if len(tensors) == 1 else torch.stack(tensors).sum(dim=0)


class DINOLoss(nn.Module):
    """Mean cross-entropy over every (teacher view, student view) pair of different views.

    The teacher sees only the global views; the student sees all views, global views first and in
    the same order as the teacher's, so pairs of the same global view are skipped.

    Args:
        out_dim: the head's output size K.
        student_temperature: 0.1 in the paper.
        centre_momentum: 0.9 in the paper.
    """

    def __init__(self, out_dim: int, student_temperature: float = 0.1, centre_momentum: float = 0.9) -> None:
        super().__init__()
        if student_temperature <= 0:
            raise ValueError(f"student temperature must be > 0, got {student_temperature}")
        self.student_temperature = student_temperature
        self.centre = TeacherCentre(out_dim, centre_momentum)

    @in_full_precision
    def forward(self, student_logits: list[torch.Tensor], teacher_logits: list[torch.Tensor],
                teacher_temperature: float) -> torch.Tensor:
        """student_logits: V tensors (B, K); teacher_logits: G <= V tensors (B, K) -> scalar.

        Updates the centre with the teacher's outputs after computing the loss, as in the paper.
        """
        # Per student view v the pairs sum to -(sum of the other teachers' p) . log softmax(v): one log-softmax
        # and one product per student view instead of one per pair (2 x 9 -> 10 with DINO's 8 local views;
        # the loss was a quarter of a tinycnn step at K = 4096).
        probabilities = [self.centre.probabilities(teacher, teacher_temperature) for teacher in teacher_logits]
        all_teachers = summed(probabilities)  # (B, K), the target of every local view
        total = student_logits[0].new_zeros((), dtype=torch.float32)
        pairs = 0
        for student_index, student in enumerate(student_logits):
            others = [p for index, p in enumerate(probabilities) if index != student_index]
            if not others:
                continue
            # (B, K): summed directly (not all_teachers minus one) so no cancellation error enters
            target = all_teachers if len(others) == len(probabilities) else summed(others)
            total = total + soft_cross_entropy(target, student, self.student_temperature).mean()
            pairs += len(others)
        if pairs == 0:
            raise ValueError("DINO needs at least two views (one teacher view and a different student view)")
        self.centre.update(torch.cat(teacher_logits))
        return total / pairs
