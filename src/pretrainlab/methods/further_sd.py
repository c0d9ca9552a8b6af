"""Self-distillation for further pre-training: MAE on the target data, pulled towards a further-pre-trained teacher.

Lee, Kang, Lee, Hwang, Kawaguchi, "Self-Distillation for Further Pre-training of Transformers",
arXiv 2210.02871 (ICLR 2023). Further pre-training a ViT on the (small) target dataset with MAE tends
to overfit; the paper first further pre-trains the initial model with MAE (the teacher), then trains
the initial model again (the student) with MAE plus a loss pulling its hidden representations to the
teacher's: L = L_MAE(student) + distill_weight * ||f_student(x) - stopgrad(f_teacher(x))||^2.

Both stages are this method, so both start from the same `init` weights:

    # stage 0 (optional): an initial pre-trained backbone, e.g. MAE on other data
    pretrainlab pretrain --method mae --data npz:source.npz --backbone vit_tiny_patch4 --out runs/initial
    # stage 1, the teacher: further pre-training of the initial backbone on the target data (plain MAE)
    pretrainlab pretrain --method further_sd --data npz:target.npz --backbone vit_tiny_patch4 \\
        --option init=runs/initial --out runs/teacher
    # stage 2, the student: the initial backbone again, MAE + self-distillation to the teacher
    pretrainlab pretrain --method further_sd --data npz:target.npz --backbone vit_tiny_patch4 \\
        --option init=runs/initial --option teacher=runs/teacher --out runs/student

`teacher` may be any finished run of the same backbone (an `mae` run too). `init` takes a run folder or a
weights file (safetensors or .pth); empty means the backbone's own random initialisation. Hub weights
(timm:NAME pretrained) are not offered: this project never downloads weights. The distance is the mean
over feature dimensions (not the sum), averaged over all tokens of the whole, unmasked image, so
`distill_weight` does not depend on the model width; the teacher is frozen and never exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pretrainlab.backbones import Backbone, load_backbone, load_weights_file
from pretrainlab.backbones.vit_parts import patchify
from pretrainlab.data.masks import random_patch_mask
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods.base import Batch, MethodContext, register_method
from pretrainlab.methods.mae import MAE, MAEConfig


@dataclass(frozen=True)
class FurtherSDConfig(MAEConfig):
    """MAE's options, and:
        teacher: run folder (or backbone.safetensors) of the further-pre-trained teacher; empty: stage 1.
        init: the student's starting weights, a run folder or weights file; empty: random initialisation.
        distill_weight: weight of the self-distillation term (1.0 in the paper).
    """

    teacher: str = ""
    init: str = ""
    distill_weight: float = 1.0


def weights_path(spec: str, what: str) -> Path:
    """A run folder's backbone.safetensors, or the file itself."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "backbone.safetensors"
    if not path.is_file():
        raise PretrainlabError(f"{what} '{spec}' has no weights: give a finished run folder or a weights file")
    return path


def load_teacher(spec: str, student: Backbone) -> Backbone:
    """The frozen teacher backbone; it must be the student's architecture."""
    path = weights_path(spec, "teacher")
    if path.suffix != ".safetensors":
        raise PretrainlabError(f"teacher '{spec}' must be a run folder or a pretrainlab backbone.safetensors")
    teacher = load_backbone(path)
    own = student.model.state_dict()
    same = teacher.name == student.name and all(
        key in own and own[key].shape == value.shape for key, value in teacher.model.state_dict().items())
    if not same:
        raise PretrainlabError(f"teacher '{spec}' is a '{teacher.name}' of another shape than the student "
                               f"'{student.name}'; train the teacher with the same --backbone and --img-size")
    return teacher.requires_grad_(False).eval()


@register_method("further_sd")
class FurtherSelfDistillation(MAE):
    """MAE whose encoder is also pulled, token by token, to a frozen further-pre-trained teacher."""

    config_class = FurtherSDConfig
    example_options = dict(MAE.example_options)

    def __init__(self, backbone: Backbone, config: FurtherSDConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        if config.distill_weight < 0:
            raise PretrainlabError(f"distill_weight must be >= 0, got {config.distill_weight}")
        if config.init:
            load_weights_file(backbone, weights_path(config.init, "init"))
        self.teacher = load_teacher(config.teacher, backbone) if config.teacher else None

    def train(self, mode: bool = True) -> FurtherSelfDistillation:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: no dropout, and no batch statistics if it has any
        return self

    def distillation_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Mean squared distance between student and teacher tokens (B, L, D) of the whole image."""
        with torch.no_grad():
            target = self.teacher.tokens(images)
        return (self.backbone.tokens(images) - target).pow(2).mean()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.views["base"][0].images
        num_patches = self.backbone.grid_size[0] * self.backbone.grid_size[1]
        mask = random_patch_mask(images.shape[0], num_patches, self.config.mask_ratio, batch.generator, images.device)
        prediction, mto_loss = self.decode(*self.encode_visible(images, mask), mask)
        target = patchify(images, self.backbone.patch_size)
        reconstruction = masked_patch_loss(prediction, target, mask, self.config.norm_pix_loss)
        outputs = {"reconstruction_loss": reconstruction.detach()}
        loss = reconstruction + self.config.mto * mto_loss
        if self.teacher is not None:
            distillation = self.distillation_loss(images)
            loss = loss + self.config.distill_weight * distillation
            outputs["distill_loss"] = distillation.detach()
        return {"loss": loss, **outputs}
