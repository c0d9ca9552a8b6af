"""SimCLRv2: SimCLR with a deeper, batch-normalised projection head whose first layer is kept for fine-tuning.

Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models are Strong Semi-Supervised Learners",
arXiv 2006.10029, section 2: the projection head g(.) grows from 2 to 3 layers, every layer is batch-normalised
(the output one without a shift), its hidden width equals the encoder's, and instead of discarding g(.) after
pre-training one fine-tunes "from the first layer of the projection head": the representation `head.0`.
The paper's optional MoCo-style memory buffer (a small gain at ImageNet scale) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pretrainlab.backbones import Backbone
from pretrainlab.heads import ProjectionHead
from pretrainlab.methods.base import MethodContext, ViewOptions, register_method
from pretrainlab.methods.simclr import SimCLR


@dataclass(frozen=True)
class SimCLRv2Config:
    """Args:
        temperature: NT-Xent temperature (0.1 in the paper's ImageNet runs).
        projection_dim: output size of g(.) (128 in the paper).
        hidden_dim: width of the hidden head layers; 0 means the backbone width, as in the paper.
        projection_layers: Linear layers in g(.) (3 in the paper; at least 2 so a middle layer exists).
        output_batch_norm: batch-normalise the head's output too (the paper's head does; no shift there).
        fine_tune_from: the representation the paper keeps for fine-tuning ("head.0": backbone + first head layer).
    """

    temperature: float = 0.1
    projection_dim: int = 128
    hidden_dim: int = 0
    projection_layers: int = 3
    output_batch_norm: bool = True
    fine_tune_from: str = "head.0"
    views: ViewOptions = field(default_factory=ViewOptions)

    def __post_init__(self) -> None:
        if self.projection_layers < 2:
            raise ValueError(f"projection_layers must be >= 2 (a middle layer to keep), got {self.projection_layers}")
        valid = ["backbone"] + [f"head.{index}" for index in range(self.projection_layers)]
        if self.fine_tune_from not in valid:
            raise ValueError(f"fine_tune_from must be one of {', '.join(valid)}, got '{self.fine_tune_from}'")


@register_method("simclrv2")
class SimCLRv2(SimCLR):
    """SimCLR's two-view NT-Xent loss on the output of a 3-layer projection head with BatchNorm in every layer."""

    config_class = SimCLRv2Config
    example_options: ClassVar[dict] = {"hidden_dim": 48, "projection_dim": 32}

    def __init__(self, backbone: Backbone, config: SimCLRv2Config, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        hidden = config.hidden_dim or backbone.embed_dim
        # Replaces SimCLR's head: BatchNorm after every Linear, the output one affine-free (the paper has no shift
        # there; NT-Xent normalises each projection anyway).
        self.projection = ProjectionHead(backbone.embed_dim, hidden, config.projection_dim, config.projection_layers,
                                         batch_norm=True, last_batch_norm=config.output_batch_norm)

    @property
    def fine_tune_representation(self) -> str:
        """The representation to fine-tune from, by its name in `representations` (the evaluation issue reads it)."""
        return self.config.fine_tune_from
