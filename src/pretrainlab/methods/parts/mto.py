"""Masked token optimisation (MTO): an add-on for masked image modelling whose transformer blocks see mask tokens.

Choi, Lee, Joung, Park, Kim, Min, "Emerging Property of Masked Token for Effective Pre-training",
arXiv 2404.08330 (ECCV 2024). Not a method of its own: MAE uses it in its decoder (`--option mto=0.1`),
and any method that runs timm blocks over a sequence holding mask tokens (SimMIM's encoder) can call
`run_blocks_with_mto` the same way.

The paper's premise is "data singularity": a mask token is a placeholder with no image content, so
it should neither disturb the representations of visible tokens nor draw its prediction from other
placeholders. What is implemented (the abstract and public summaries name weight recalibration and
losses on the masked tokens' attention; the full text with the exact loss terms was not reachable
from this project's offline references, so the two parts below are this project's reading of it):
- weight recalibration: visible tokens' queries do not attend to mask-token keys (an additive -inf
  bias), so the attention weights of visible tokens are renormalised over visible tokens only;
- singularity loss: the attention mass that mask-token queries put on mask-token keys, averaged over
  heads, mask queries and blocks, weighted by `mto` and added to the method's loss, so mask tokens
  are pushed to gather their content from the visible tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn

from pretrainlab.backbones.attention import block_with_probabilities


def token_role_bias(is_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """is_mask (B, L) bool -> additive attention bias (B, 1, L, L): -inf where a visible query meets a mask key."""
    visible_query = ~is_mask.unsqueeze(2)  # (B, L, 1)
    mask_key = is_mask.unsqueeze(1)  # (B, 1, L)
    bias = torch.zeros(is_mask.shape[0], is_mask.shape[1], is_mask.shape[1], dtype=dtype, device=is_mask.device)
    return bias.masked_fill(visible_query & mask_key, float("-inf")).unsqueeze(1)


def mask_to_mask_attention(probabilities: torch.Tensor, is_mask: torch.Tensor) -> torch.Tensor:
    """Mean attention mass that mask-token queries put on mask-token keys (self included).

    Args:
        probabilities: (B, H, L, L) softmax attention, rows are queries.
        is_mask: (B, L) bool, True for mask tokens.
    """
    mass = (probabilities * is_mask[:, None, None, :].to(probabilities.dtype)).sum(dim=-1)  # (B, H, L)
    weights = is_mask[:, None, :].to(mass.dtype).expand_as(mass)
    return (mass * weights).sum() / weights.sum().clamp(min=1.0)


def run_blocks_with_mto(blocks: Iterable[nn.Module], tokens: torch.Tensor, is_mask: torch.Tensor,
                        exclude_from_visible: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs timm blocks over tokens (B, L, D) holding mask tokens where `is_mask` (B, L) -> (tokens, MTO loss).

    Args:
        exclude_from_visible: apply the weight recalibration (visible queries ignore mask keys).
    """
    bias = token_role_bias(is_mask, tokens.dtype) if exclude_from_visible else None
    losses = []
    for block in blocks:
        tokens, probabilities = block_with_probabilities(block, tokens, bias)
        losses.append(mask_to_mask_attention(probabilities, is_mask))
    loss = torch.stack(losses).mean() if losses else tokens.new_zeros(())
    return tokens, loss
