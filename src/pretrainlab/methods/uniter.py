"""UNITER: image-text matching, masked language modelling and word-region alignment as pre-training.

Chen et al., "UNITER: UNiversal Image-TExt Representation Learning", arXiv 1909.11740. One transformer
reads an image's regions and a caption's words together (backbones/text/cross_modal.py); the vision
backbone, whose last feature map gives the regions, is trained by three of the paper's tasks:

- ITM (section 3.2): a binary head on the joint [CLS] says whether the caption describes the image; each
  image is shown with its own caption (positive) and with another image's caption of the batch (negative;
  a drawn caption identical to the image's own counts as positive, as synthetic captions repeat).
- MLM: 15 % of the words of the positive captions are masked (BERT's 80/10/10) and predicted from the
  other words and the whole image. Conditional masking: only the words are masked, never the image, so
  the image must supply what the masked word says (the paper's point against masking both at once).
- WRA: the optimal-transport distance between the contextualised word and region embeddings (cosine
  cost, IPOT, losses/optimal_transport.py), minimised for positive pairs and maximised for negatives.

The paper samples one task per mini-batch; here the three losses are summed on every batch (the backbone
runs once; ITM and WRA share one forward pass of the positive and negative pairs, as in the paper's code).
Masked region modelling, the paper's fourth family, is left out: the brief names ITM, MLM and WRA.
Views: mild crops, no flips (captions name sides). The run folder gets `cross_modal.safetensors`;
`pretrainlab eval RUN --protocol image_text_matching` scores held-out pairs with the ITM head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.text.cross_modal import CROSS_MODAL_FILE, CrossModalModel, save_cross_modal
from pretrainlab.backbones.text.tokenizer import SPECIALS, WordTokenizer
from pretrainlab.backbones.text.word_masks import IGNORE, mask_words
from pretrainlab.data.captions import CAPTION_COUNTS, CAPTIONS, caption_ids, choose_captions
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.optimal_transport import cosine_cost, ot_distance, word_region_alignment_loss
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method
from pretrainlab.methods.spark import feature_map_shapes


@dataclass(frozen=True)
class UNITERConfig:
    """Args:
        width, depth, heads: the cross-modal transformer (768 / 12 / 12 in UNITER-base).
        max_length: word tokens per caption, BOS and EOS included.
        region_grid: pool the last feature map to this many cells a side (0: every cell is a region).
        mask_probability: share of words masked for MLM (0.15 in the paper).
        itm_weight, mlm_weight, wra_weight: loss weights (WRA 0.1 as in the paper's ITM + WRA objective).
        ot_beta, ot_iterations: IPOT's step size and proximal steps (0.5 and 50 in the paper's code).
        crop_min_scale: random-resized-crop lower bound of the image view.
    """

    width: int = 128
    depth: int = 2
    heads: int = 4
    max_length: int = 32
    region_grid: int = 0
    mask_probability: float = 0.15
    itm_weight: float = 1.0
    mlm_weight: float = 1.0
    wra_weight: float = 0.1
    ot_beta: float = 0.5
    ot_iterations: int = 50
    crop_min_scale: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.mask_probability < 1:
            raise PretrainlabError(f"mask_probability must be in (0, 1), got {self.mask_probability}")
        if min(self.itm_weight, self.mlm_weight, self.wra_weight) < 0:
            raise PretrainlabError("itm_weight, mlm_weight and wra_weight must be >= 0")
        if self.region_grid < 0 or self.max_length < 3:
            raise PretrainlabError(f"region_grid must be >= 0 and max_length >= 3, got {self.region_grid}, "
                                   f"{self.max_length}")


def negative_partners(count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(count,) index of another item for each item: i + a shift in [1, count) mod count, never i itself."""
    if count < 2:
        raise PretrainlabError("uniter needs at least 2 images per batch to draw mismatched captions")
    shift = torch.randint(1, count, (1,), generator=generator, device=generator.device if generator else None)
    return (torch.arange(count, device=device) + shift.to(device)) % count


def matching_labels(texts: list[str], partners: torch.Tensor) -> torch.Tensor:
    """(2 B,) ITM labels of [own captions ; partners' captions]: 1 for own, and 1 where a partner's text is
    identical to the image's own (it describes the image as well), else 0."""
    ids = caption_ids(texts, partners.device)  # (B,)
    return torch.cat([torch.ones_like(ids), (ids[partners] == ids).long()])


@register_method("uniter")
class UNITER(Method):
    """Backbone feature-map cells as regions; a cross-modal transformer with ITM, MLM and WRA objectives."""

    config_class = UNITERConfig
    needs_captions = True
    example_options = {"width": 16, "depth": 1, "heads": 2, "max_length": 16, "ot_iterations": 5}

    def __init__(self, backbone: Backbone, config: UNITERConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        tokenizer = WordTokenizer.build(context.captions, max_length=config.max_length)
        channels = feature_map_shapes(backbone, context.img_size, context.in_chans)[-1][0]  # last map's C
        self.cross_modal = CrossModalModel(tokenizer, channels, config.width, config.depth, config.heads,
                                           config.region_grid)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"image": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), flip_p=0.0,
                                  jitter_p=0.0, grayscale_p=0.0)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if CAPTIONS not in batch.extra:
            raise PretrainlabError("uniter needs captions with every batch; use --data captions:PATH or captions:SPEC")
        texts = choose_captions(batch.extra[CAPTIONS], batch.extra[CAPTION_COUNTS], batch.generator)
        view = batch.views["image"][0].images  # (B, C, S, S)
        regions = self.cross_modal.embed_regions(self.backbone.feature_maps(view)[-1])  # (B, R, W)
        ids = self.cross_modal.tokenize(texts, view.device)  # (B, L)
        mlm = self._masked_language_loss(regions, ids, batch.generator)
        partners = negative_partners(len(texts), batch.generator, view.device)
        labels = matching_labels(texts, partners)  # (2 B,)
        pair_ids = torch.cat([ids, ids[partners]])  # (2 B, L): own captions, then the partners'
        joint, region_out, word_out = self.cross_modal(torch.cat([regions, regions]), pair_ids)
        itm_logits = self.cross_modal.itm_head(joint).float()  # (2 B, 2)
        itm = F.cross_entropy(itm_logits, labels)
        words_valid = pair_ids >= len(SPECIALS)  # (2 B, L): words, not BOS / EOS / PAD
        regions_valid = torch.ones(region_out.shape[:2], dtype=torch.bool, device=view.device)
        distance = ot_distance(cosine_cost(word_out.float(), region_out.float()), words_valid, regions_valid,
                               self.config.ot_beta, self.config.ot_iterations)  # (2 B,)
        wra = word_region_alignment_loss(distance, labels.bool())
        loss = self.config.itm_weight * itm + self.config.mlm_weight * mlm + self.config.wra_weight * wra
        accuracy = (itm_logits.argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "itm": itm.detach(), "mlm": mlm.detach(), "wra": wra.detach(),
                "itm_accuracy": accuracy.detach()}

    def _masked_language_loss(self, regions: torch.Tensor, ids: torch.Tensor,
                              generator: torch.Generator | None) -> torch.Tensor:
        """regions (B, R, W), ids (B, L) of the matched captions -> MLM cross-entropy over the masked words."""
        tokenizer_size = self.cross_modal.tokenizer.vocab_size
        if generator is not None and generator.device != ids.device:
            generator = None  # masks are drawn where the ids live; a CPU generator cannot draw CUDA tensors
        masked, targets = mask_words(ids, self.cross_modal.mask_id, tokenizer_size, generator,
                                     self.config.mask_probability)
        chosen = targets != IGNORE  # (B, L)
        if not chosen.any():  # captions of special tokens only: nothing to predict
            return regions.sum() * 0
        _, _, words = self.cross_modal(regions, masked)
        logits = self.cross_modal.mlm_head(words[chosen]).float()  # (P, V)
        return F.cross_entropy(logits, targets[chosen])

    def excluded_from_weight_decay(self, name: str, parameter: nn.Parameter) -> bool:
        return "embedding" in name or name.endswith(("word_position", "cls_token")) or \
            super().excluded_from_weight_decay(name, parameter)

    def save_artifacts(self, run_dir: Path) -> None:
        save_cross_modal(run_dir / CROSS_MODAL_FILE, self.cross_modal, {"method": "uniter"})
