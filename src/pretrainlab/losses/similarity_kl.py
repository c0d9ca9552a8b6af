"""Similarity-distribution alignment: a smaller embedding's in-batch neighbours follow a larger one's.

The KL term of Starbucks (Zhuang, Wang, Koopman, Zuccon, "Starbucks: Improved Training for 2D Matryoshka
Embeddings", arXiv 2410.13230): each sub-network's score distribution over the batch is pulled towards
the full model's, which is held fixed (no gradient through the target).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrainlab.losses.full_precision import in_full_precision


def similarity_log_distribution(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, D) -> (N, N - 1): log-softmax over each row's cosine similarities to the other N - 1 embeddings."""
    normalized = F.normalize(embeddings, dim=1)
    similarity = normalized @ normalized.T / temperature  # (N, N)
    count = similarity.shape[0]
    others = ~torch.eye(count, dtype=torch.bool, device=similarity.device)
    return F.log_softmax(similarity[others].view(count, count - 1), dim=1)


@in_full_precision
def similarity_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the rows' in-batch similarity distributions, averaged over rows.

    Args:
        student: (N, d) embeddings that receive the gradient.
        teacher: (N, D) embeddings of the same N images (detached here); d and D may differ.
        temperature: softmax temperature > 0.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student_log = similarity_log_distribution(student, temperature)
    teacher_log = similarity_log_distribution(teacher.detach(), temperature)
    return F.kl_div(student_log, teacher_log, log_target=True, reduction="batchmean")
