"""The Method contract: a pretext task around a backbone, that the training loop runs without knowing it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.vit_parts import runs_token_by_token
from pretrainlab.data.views import Views, ViewSpec, make_view_set, to_float
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads.projection import ProjectionHead
from pretrainlab.registry import Registry


@dataclass(frozen=True)
class MethodContext:
    """What a method may know about the data it trains on."""

    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int = 0
    dataset_size: int = 0
    captions: tuple[str, ...] = ()  # the training split's captions (image-text sources), to build tokenizers
    tokenizer: Any = None  # a token file's Tokenizer (data/tokens) when the data are code grids (`tokens:PATH`)
    class_names: tuple[str, ...] = ()  # the source's class names, for methods that name annotated regions (dito)


@dataclass(frozen=True)
class ViewOptions:
    """Augmentation strengths shared by joint-embedding methods (SimCLR's recipe as defaults).

    Colour jitter uses SimCLR's strength s: brightness, contrast, saturation 0.8 s and hue 0.2 s.
    `saturation`, when set, replaces 0.8 s for saturation alone: BYOL, MoCo v3 and DINO jitter brightness,
    contrast, saturation and hue by 0.4 / 0.4 / 0.2 / 0.1 (s = 0.5 with saturation 0.2). Saturation and hue
    act on colour images only. A recipe's or `--option`'s view group is built from these defaults plus the
    keys it gives, not from the method's preset.
    """

    crop_min_scale: float = 0.08
    flip_p: float = 0.5
    jitter_strength: float = 0.5
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    solarize_p: float = 0.0
    saturation: float | None = None

    def __post_init__(self) -> None:
        # checked here, when options are read, not when the first views are drawn (after the run folder exists)
        if not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"crop_min_scale must be in (0, 1] (the smallest crop's share of the image area), "
                             f"got {self.crop_min_scale}")
        if self.saturation is not None and self.saturation < 0:
            raise ValueError(f"saturation must be >= 0 (or unset for 0.8 x jitter_strength), got {self.saturation}")

    def spec(self, size: int, count: int = 1, **overrides: Any) -> ViewSpec:
        saturation = 0.8 * self.jitter_strength if self.saturation is None else self.saturation
        values = dict(
            size=size, count=count, crop_scale=(self.crop_min_scale, 1.0), flip_p=self.flip_p,
            jitter_p=self.jitter_p if self.jitter_strength > 0 else 0.0,
            brightness=0.8 * self.jitter_strength, contrast=0.8 * self.jitter_strength,
            saturation=saturation, hue=min(0.5, 0.2 * self.jitter_strength),
            grayscale_p=self.grayscale_p, blur_p=self.blur_p, solarize_p=self.solarize_p,
        )
        values.update(overrides)
        return ViewSpec(**values)


@dataclass
class Batch:
    """What `Method.forward` receives.

    Args:
        views: view name -> list of `Views` (one per `count` of its spec).
        images: (B, C, H, W) float in [0, 1], the un-augmented batch.
        labels: (B,) int64 or None.
        generator: the step's random generator, for masks drawn inside the method.
    """

    views: dict[str, list[Views]]
    images: torch.Tensor
    labels: torch.Tensor | None = None
    generator: torch.Generator | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Method(nn.Module):
    """Base class of every pretext task.

    Subclasses set `config_class`, build their heads in `__init__`, declare their views in
    `view_specs`, and return {"loss": scalar, ...logged scalars} from `forward`. `backbone` is what
    gets exported.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    needs_labels: ClassVar[bool] = False
    needs_tokens: ClassVar[bool] = False  # True: the backbone must be a transformer with patch tokens
    # Non-empty: why `--strategy fsdp` cannot shard this method (e.g. a teacher run outside `forward`, where FSDP
    # gathers no weights); the trainer then refuses fsdp with this reason. The 27 methods registered before the
    # caption methods (clip, gpt4image) were checked to shard (bench/fsdp_vs_ddp_methods.py, docs/scale.md).
    fsdp_unsupported: ClassVar[str] = ""
    needs_captions: ClassVar[bool] = False  # True: trains on image-caption pairs (Batch.extra["captions"])
    # True: trains on code grids (`--data tokens:PATH`) and only on them; pixel views would scramble code indices.
    takes_code_grids: ClassVar[bool] = False
    # Options that make a tiny, fast instance for the registry-driven tests (small heads, few prototypes).
    example_options: ClassVar[dict[str, Any]] = {}
    # Set (pixels): on small images, crops keep at least this many pixels a side unless a crop scale is given
    # (methods/parts/small_images.py); None: the views' scale range is used as written, at any image size.
    small_image_crop_side: ClassVar[int | None] = None
    # Set: the option holding the number of multi-crop local views, turned off where they are narrower than a
    # CNN's output stride unless that option is given (methods/parts/local_views.py); None: no local views.
    local_view_count_option: ClassVar[str | None] = None

    def __init__(self, backbone: Backbone, config: Any, context: MethodContext) -> None:
        super().__init__()
        if self.needs_tokens and not backbone.has_tokens:
            raise PretrainlabError(
                f"method '{self.name}' needs a vision transformer backbone (patch tokens), got '{backbone.name}'; "
                "try --backbone vit_nano_patch4 or vit_tiny_patch4"
            )
        if self.needs_tokens and not runs_token_by_token(backbone):
            raise PretrainlabError(
                f"method '{self.name}' runs a timm VisionTransformer's parts on chosen tokens (patch embedding, "
                f"position embedding, blocks); '{backbone.name}' has tokens but another structure (relative or "
                "rotary positions, convolutions over the token grid); try --backbone vit_nano_patch4"
            )
        if self.needs_labels and context.num_classes < 2:
            raise PretrainlabError(f"method '{self.name}' trains with labels; use a labelled dataset")
        if self.needs_captions and not context.captions:
            raise PretrainlabError(f"method '{self.name}' trains on image-caption pairs; use --data captions:PATH "
                                   "(CSV/JSONL) or captions:SPEC (synthetic captions, e.g. captions:composed:builtin)")
        if (context.tokenizer is not None) != self.takes_code_grids:
            takers = ", ".join(name for name in METHODS.names() if METHODS.get(name).takes_code_grids)
            raise PretrainlabError(f"method '{self.name}' trains on code grids (--data tokens:PATH) only"
                                   if self.takes_code_grids else
                                   f"method '{self.name}' makes pixel views, which scramble code grids; on "
                                   f"--data tokens:PATH use {takers}")
        self.backbone = backbone
        self.config = config
        self.context = context
        self.register_buffer("mean", torch.tensor(context.mean), persistent=False)
        self.register_buffer("std", torch.tensor(context.std), persistent=False)

    def view_specs(self) -> dict[str, ViewSpec]:
        """View name -> spec. The default: two SimCLR-style views of the training size."""
        return {"global": ViewOptions().spec(self.context.img_size, count=2)}

    @torch.no_grad()
    def prepare_batch(self, images_uint8: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> Batch:
        """(B, H, W, C) uint8 on the training device -> a `Batch` of views (outside autocast, no gradients)."""
        images = to_float(images_uint8)
        views = {
            name: make_view_set(images, spec, generator, self.mean, self.std)
            for name, spec in self.view_specs().items()
        }
        return Batch(views=views, images=images, labels=labels, generator=generator)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named features of normalised images (B, C, H, W) -> {name: (B, D)}; "backbone" is always there.

        Methods with projection heads add "head.0", "head.1", ... (after each head layer) so evaluation
        can measure the representation before the head and after each of its layers ("Investigating the
        Benefits of Projection Head for Representation Learning", arXiv 2403.11391). The default finds the
        head through `projection_head()`.
        """
        features = self.backbone.pooled(images)  # (B, D)
        named = {"backbone": features}
        head = self.projection_head()
        if head is not None:
            named.update({f"head.{index}": output for index, output in enumerate(head.hidden_outputs(features))})
        return named

    def projection_head(self) -> ProjectionHead | None:
        """The `ProjectionHead` applied to the pooled backbone features (attribute `projection`), if any.

        Methods whose head sits elsewhere override this; evaluation keeps its first layers for `RUN@head.N`.
        """
        head = getattr(self, "projection", None)
        return head if isinstance(head, ProjectionHead) else None

    def training_labels(self, labels: np.ndarray | None) -> tuple[np.ndarray | None, dict[str, Any]]:
        """The labels (N,) the method trains on, given the training split's, and notes for the run's config.yaml.

        The default trains on the dataset's own labels. Supervised pre-training with `label_noise` returns a
        noisy copy drawn once per image by its seed (label noise is a property of the data, not of a batch).
        """
        return labels, {}

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step (momentum encoders, EMA teachers, temperature schedules)."""

    def reconstruction_grid(self, images: torch.Tensor,
                            generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Normalised images (B, C, H, W) -> (3 B, C, H, W) in [0, 1]: inputs, masked inputs, reconstructions.

        Reconstructing methods override this (see methods/reconstruction.py); the pipeline saves the grid as
        `reconstructions.png` in the run folder. None (the default): the method reconstructs nothing.
        """
        return None

    def save_artifacts(self, run_dir: Path) -> None:
        """Writes what the run folder needs beside `backbone.safetensors` (e.g. CLIP's text tower); rank 0 only."""

    def excluded_from_weight_decay(self, name: str, parameter: nn.Parameter) -> bool:
        """Biases, norms, tokens and position embeddings get no weight decay (the common SSL practice)."""
        return parameter.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "mask_token", "reg_token"))


class MethodRegistry(Registry[type[Method]]):
    """Method classes by name; names under a registered prefix (e.g. "compose:mae+simclr") are built on demand."""

    def __init__(self) -> None:
        super().__init__("method")
        self._prefixes: dict[str, Any] = {}

    def register_prefix(self, prefix: str, build: Any) -> None:
        """`build(name) -> Method subclass` answers every lookup of a name starting with `prefix`."""
        self._prefixes[prefix] = build

    def get(self, name: str) -> type[Method]:
        for prefix, build in self._prefixes.items():
            if name.startswith(prefix):
                return build(name)
        return super().get(name)


METHODS: MethodRegistry = MethodRegistry()


def register_method(name: str) -> Any:
    """Class decorator: registers a Method subclass under `name`."""

    def decorate(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)

    return decorate
