"""Masks across patches and modalities (MultiMAE): a fixed budget of visible tokens, split per image.

Bachmann, Mizrahi, Atanov, Zamir, "MultiMAE: Multi-modal Multi-task Masked Autoencoders", arXiv 2204.01678:
every image keeps the same number T of visible tokens over all its modalities, and the share of each
modality is drawn from a symmetric Dirichlet distribution, so some images show mostly one modality
and the model learns to predict the others from it.
"""

from __future__ import annotations

import numpy as np
import torch

from pretrainlab.errors import PretrainlabError


def dirichlet_visible_counts(batch: int, num_modalities: int, total_visible: int, alpha: float,
                             generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                             max_per_modality: int | None = None) -> torch.Tensor:
    """Visible tokens per image and modality, (B, M) int64, each row summing to exactly `total_visible`.

    Shares come from Dir(alpha, ..., alpha); rounding gives the leftover tokens to the largest remainders.
    """
    if alpha <= 0:
        raise PretrainlabError(f"dirichlet_alpha must be > 0, got {alpha}")
    if max_per_modality is not None and total_visible > max_per_modality:
        raise PretrainlabError(f"{total_visible} visible tokens do not fit one modality's {max_per_modality} patches")
    # numpy's Dirichlet sampler, seeded from the step's torch generator, keeps runs reproducible.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator else "cpu"))
    shares = np.random.default_rng(seed).dirichlet([alpha] * num_modalities, size=batch)  # (B, M)
    exact = torch.from_numpy(shares).to(device) * total_visible
    counts = exact.floor().long()
    leftover = total_visible - counts.sum(dim=1, keepdim=True)  # (B, 1), in [0, M)
    order = (exact - counts).argsort(dim=1, descending=True).argsort(dim=1)  # rank of each remainder
    return counts + (order < leftover).long()


def modality_masks(counts: torch.Tensor, num_patches: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly random patches per modality: counts (B, M) visible -> hidden masks (B, M, N) bool (True = hidden)."""
    batch, num_modalities = counts.shape
    noise = torch.rand(batch, num_modalities, num_patches, generator=generator, device=counts.device)
    ranks = noise.argsort(dim=-1).argsort(dim=-1)  # (B, M, N)
    return ranks >= counts.unsqueeze(-1)
