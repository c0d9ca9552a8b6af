"""The variational lower bound on mutual information that M3I pre-training maximises for every target.

Su et al., "Towards All-in-one Pre-training via Maximizing Multi-modal Mutual Information", arXiv 2211.09807,
section 3: for an input representation z_x and a target representation z_y,
    I(z_x; z_y) >= E_p(x, y)[ log P_hat(z_y | z_hat) ] + H(z_y),
where z_hat = decoder(z_x) predicts the target and P_hat is a tractable distribution over target
representations. With the Boltzmann form P_hat(z_y | z_hat) = exp(cos(z_hat, z_y) / tau) / sum_{z' in Y} exp(...)
over a candidate set Y, maximising the bound is minimising a cross-entropy over Y; the paper shows that
supervised training (Y = the learned class embeddings), contrastive self-supervision (Y = the batch's other
views) and image-text contrast (Y = the batch's captions) are all this one estimator with different targets.
H(z_y) does not depend on the input encoder and is dropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrainlab.losses.full_precision import in_full_precision


@in_full_precision
def negative_mutual_information_bound(predictions: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor,
                                      temperature: float) -> torch.Tensor:
    """-E[log P_hat(z_y | z_hat)] with a cosine Boltzmann P_hat over the candidate target set.

    Several candidates can be the same target (two images with one caption): their probabilities add, so
    log P_hat = logsumexp(logits over positives) - logsumexp(logits over all candidates).

    Args:
        predictions: (B, E) decoded input representations z_hat.
        candidates: (K, E) target representations (the set Y).
        positives: (B, K) bool, True where candidate k is row b's target (at least one per row).
        temperature: tau > 0.

    Returns:
        scalar, the mean over rows.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every prediction needs at least one positive candidate")
    logits = F.normalize(predictions, dim=1) @ F.normalize(candidates, dim=1).to(predictions.dtype).T  # (B, K)
    logits = logits / temperature
    positive_logits = logits.masked_fill(~positives, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(positive_logits, dim=1)).mean()
