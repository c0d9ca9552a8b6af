"""Distillation losses: soft-label divergences between teacher and student, and embedding regression.

Cui, Wang, Zhao, Li, Lu, Gu, Du, Yu, Ma, "Beyond Self-Supervision: A Simple Yet Effective Network Distillation
Alternative to Improve Backbones", arXiv 2103.05959 (SSLD): the student's softmax output must match the
frozen teacher's, with the symmetric Jensen-Shannon divergence (reported better than KL or cross-entropy);
no ground-truth label is used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pretrainlab.losses.full_precision import in_full_precision

DIVERGENCES = ("js", "kl")
EMBEDDING_LOSSES = ("cosine", "mse")


@in_full_precision
def kl_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher || p_student), averaged over the batch; logits (B, K) -> scalar."""
    teacher_log = F.log_softmax(teacher_logits.detach().float(), dim=1)
    student_log = F.log_softmax(student_logits.float(), dim=1)
    return (teacher_log.exp() * (teacher_log - student_log)).sum(dim=1).mean()


@in_full_precision
def js_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence 0.5 KL(p || m) + 0.5 KL(q || m), m = (p + q) / 2; logits (B, K) -> scalar.

    Symmetric and bounded by log 2; the gradient reaches the student through both terms.
    """
    teacher_log = F.log_softmax(teacher_logits.detach().float(), dim=1)
    student_log = F.log_softmax(student_logits.float(), dim=1)
    mixture_log = torch.logaddexp(teacher_log, student_log) - math.log(2.0)  # log((p + q) / 2), stable
    teacher_term = (teacher_log.exp() * (teacher_log - mixture_log)).sum(dim=1)
    student_term = (student_log.exp() * (student_log - mixture_log)).sum(dim=1)
    return (0.5 * teacher_term + 0.5 * student_term).mean()


def soft_label_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """`kind` "js" (SSLD's) or "kl"; teacher_logits, student_logits (B, K), already divided by temperature."""
    if kind == "js":
        return js_divergence(teacher_logits, student_logits)
    if kind == "kl":
        return kl_divergence(teacher_logits, student_logits)
    raise ValueError(f"unknown divergence '{kind}'; valid: {', '.join(DIVERGENCES)}")


@in_full_precision
def embedding_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Regression of the teacher's embedding: "cosine" (1 - cos) or "mse" (mean squared error per entry).

    Args:
        student: (B, D) student embeddings mapped into the teacher's space.
        teacher: (B, D) teacher embeddings (no gradient flows into them).
    """
    teacher = teacher.detach().to(student.dtype)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    raise ValueError(f"unknown embedding loss '{kind}'; valid: {', '.join(EMBEDDING_LOSSES)}")
