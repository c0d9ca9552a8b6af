"""What every analysis of one `pretrainlab explain` call shares: the target, the images, the classifier, the outputs.

Images: `images` test images (class-balanced when labelled, fixed by `seed`), at the explanation size: the
data's own size for convolutional backbones (they take any size) and the backbone's size for transformers,
unless `img_size` is given (checked: a size the model cannot take is an error). Masks are resized with
nearest-neighbour so every pixel keeps a class id.

Classifier: the project's linear probe (eval/linear.py) fitted on the pooled features of at most
`probe_images` training images, single-label (cross-entropy) or, on multi-label sources such as `composed:`
canvases, one logistic regression per class (eval/protocols/multilabel.py): the response maps of a network
tuned only with image-level tags ("Deep Learning Face Attributes in the Wild", arXiv 1411.7766).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pretrainlab.backbones.factory import check_image_size
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.data.subsets import subset_indices
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.features import evaluating, input_batches, normalisation
from pretrainlab.eval.linear import LinearProbe, feature_statistics, fit_linear_probe
from pretrainlab.eval.protocols.multilabel import fit_multilabel_logistic
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget
from pretrainlab.explain.model import ProbedBackbone, default_cam_layer, probe_as_linear, resolve_layer, token_reshape

log = logging.getLogger(__name__)
T = TypeVar("T")
MULTILABEL_L2 = 1e-3  # the middle of eval/linear.py's grid; a per-class validation would cost a fit per strength


@dataclass
class ExplainSettings:
    """Args:
        images: how many test images the per-image analyses explain.
        layer: the layer CAMs, dissection and feature visualisation look at (default: see model.default_cam_layer).
        img_size: explanation input size (default: see the module docstring).
        seed: image choice, random masks, optimisation starts.
        batch_size: images per forward pass.
        probe_images: training images the linear probe is fitted on.
        options: per-analysis options (`--option cam_methods=[gradcam,eigencam]`); each analysis documents its own.
        show_progress: progress bars on long loops.
    """

    images: int = 16
    layer: str | None = None
    img_size: int | None = None
    seed: int = 0
    batch_size: int = 32
    probe_images: int = 2000
    options: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True


@dataclass
class ExplainInputs:
    """The explained images at the explanation size S: x (N, C, S, S) normalised on the device, pixels (N, S, S, C)
    uint8 for figures, labels (N,) or None, multilabels (N, K) or None, masks (N, S, S) or None."""

    x: torch.Tensor
    pixels: np.ndarray
    labels: np.ndarray | None
    multilabels: np.ndarray | None
    masks: np.ndarray | None


@dataclass
class Classifier:
    """The explained classifier: backbone + probe as one module, and whether its classes are independent labels."""

    model: nn.Module
    num_classes: int
    multilabel: bool
    train_images: int


class ExplainContext:
    """Shared state of one explanation run; every analysis reads what it needs and computes it once."""

    def __init__(self, target: EvalTarget, source: ImageSource, device: torch.device, out_dir: Path,
                 settings: ExplainSettings | None = None, against: EvalTarget | None = None) -> None:
        self.target = target
        self.source = source
        self.device = device
        self.out_dir = Path(out_dir)
        self.settings = settings or ExplainSettings()
        self.against = against
        self.backbone = target.backbone.to(device).eval()
        self.size = self.settings.img_size or self._default_size()
        check_image_size(self.backbone, self.size, target.in_chans)
        self.mean, self.std = normalisation(target, source.train.images)

    def _default_size(self) -> int:
        return self.target.img_size if self.backbone.has_tokens else self.source.image_size[0]

    # -- options and outputs --------------------------------------------------------------------
    def option(self, name: str, default: T) -> T:
        return self.settings.options.get(name, default)

    def progress(self, iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        return iter(tqdm(iterable, desc=description, total=total, disable=not self.settings.show_progress,
                         leave=False, dynamic_ncols=True))

    def path(self, name: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / name

    def save_arrays(self, name: str, **arrays: Any) -> Path:
        path = self.path(f"{name}.npz")
        np.savez_compressed(path, **{key: np.asarray(value) for key, value in arrays.items()})
        return path

    def result(self, analysis: str, metric: str, value: float, started: float, higher_is_better: bool = True,
               **settings: Any) -> EvalResult:
        """One summary record: protocol `explain.ANALYSIS`, so `pretrainlab compare` ranks backbones on it."""
        base = {"img_size": self.size, "seed": self.settings.seed, "split": self.source.split_note}
        if "inputs" in self.__dict__:  # computed: the analysis explained these images
            base["images"] = len(self.inputs.x)
        return EvalResult(protocol=f"explain.{analysis}", data=self.source.spec, metric=metric, value=float(value),
                          seconds=time.perf_counter() - started, settings={**base, **settings},
                          backbone=self.target.label, higher_is_better=higher_is_better)

    # -- images -----------------------------------------------------------------------------------
    def batches(self, images: np.ndarray, size: int | None = None) -> Iterator[torch.Tensor]:
        """uint8 images (N, H, W, C) -> normalised inputs (B, C, S, S) on the device."""
        return input_batches(self.target, images, self.mean, self.std, self.device, size or self.size,
                             self.settings.batch_size)

    def split(self) -> ImageSet:
        return self.source.test if self.source.test is not None else self.source.train

    @cached_property
    def inputs(self) -> ExplainInputs:
        split = self.split()
        count = min(self.settings.images, len(split))
        if count < 1:
            raise PretrainlabError(f"--images must be at least 1, got {self.settings.images}")
        chosen = subset_indices(split, count, self.settings.seed) if count < len(split) else np.arange(len(split))
        chosen = chosen[:count]
        images = np.ascontiguousarray(split.images[chosen])
        x = torch.cat(list(self.batches(images)))
        pixels = resize_pixels(images, self.size)
        masks = None if split.masks is None else resize_masks(split.masks[chosen], self.size)
        labels = None if split.labels is None else split.labels[chosen]
        multilabels = None if split.multilabels is None else split.multilabels[chosen]
        return ExplainInputs(x, pixels, labels, multilabels, masks)

    # -- the classifier ---------------------------------------------------------------------------
    @property
    def has_classes(self) -> bool:
        return self.source.labelled or self.source.has_multilabels

    def require_classes(self, analysis: str) -> None:
        if not self.has_classes:
            raise PretrainlabError(f"analysis '{analysis}' explains a class, but dataset '{self.source.spec}' has no "
                                   "labels; use a labelled source, or --what cam with --option cam_methods=[eigencam]")

    @torch.no_grad()
    def pooled_features(self, images: np.ndarray) -> torch.Tensor:
        with evaluating(self.backbone):
            return torch.cat([self.backbone.pooled(x).float().cpu() for x in self.batches(images)])

    @cached_property
    def classifier(self) -> Classifier:
        train = self.source.train
        multilabel = train.labels is None and train.multilabels is not None
        if train.labels is None and not multilabel:
            self.require_classes("classifier")
        limit = min(self.settings.probe_images, len(train))
        chosen = subset_indices(train, limit, 0) if limit < len(train) else np.arange(len(train))
        features = self.pooled_features(np.ascontiguousarray(train.images[chosen]))  # (M, D)
        if multilabel:
            targets = torch.from_numpy(train.multilabels[chosen]).float()
            mean, std = feature_statistics(features.double())
            weight, bias = fit_multilabel_logistic(((features.double() - mean) / std).float(), targets, MULTILABEL_L2)
            head = probe_as_linear(LinearProbe(weight, bias, mean, std, MULTILABEL_L2))
            num_classes = targets.shape[1]
        else:
            labels = torch.from_numpy(train.labels[chosen]).long()
            num_classes = max(self.source.num_classes, int(labels.max()) + 1)
            head = probe_as_linear(fit_linear_probe(features, labels, num_classes, self.settings.seed))
        model = ProbedBackbone(self.backbone, head.to(self.device)).eval()
        return Classifier(model, num_classes, multilabel, limit)

    @cached_property
    def explained(self) -> tuple[np.ndarray, np.ndarray]:
        """(image index (M,), class (M,)): each image with its label, or each canvas with every class it shows."""
        inputs = self.inputs
        if inputs.labels is not None:
            return np.arange(len(inputs.labels)), inputs.labels.astype(np.int64)
        if inputs.multilabels is not None:
            images, classes = np.nonzero(inputs.multilabels)
            return images.astype(np.int64), classes.astype(np.int64)
        return np.arange(len(inputs.x)), np.zeros(len(inputs.x), dtype=np.int64)  # unlabeled: class-free maps only

    def mask_id(self, cls: int) -> int:
        """The mask value of class `cls`: composed canvases reserve 0 for background."""
        names = self.source.mask_classes
        return cls + 1 if names and names[0] == "background" else cls

    # -- layers -------------------------------------------------------------------------------------
    @cached_property
    def layer_name(self) -> str:
        return self.settings.layer or default_cam_layer(self.backbone, self.inputs.x)

    @property
    def layer(self) -> nn.Module:
        return resolve_layer(self.backbone, self.layer_name)

    @property
    def reshape(self):  # noqa: ANN201 - a callable or None
        return token_reshape(self.backbone, self.size, self.size)


def resize_pixels(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N, size, size, C), antialiased bilinear (as the model's inputs)."""
    if images.shape[1:3] == (size, size):
        return images
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) class ids -> (N, size, size), nearest neighbour."""
    if masks.shape[1:] == (size, size):
        return np.ascontiguousarray(masks)
    x = torch.from_numpy(np.ascontiguousarray(masks))[:, None].float()
    return F.interpolate(x, size=(size, size), mode="nearest")[:, 0].byte().numpy()
