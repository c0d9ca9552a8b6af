"""Fine-tuning machinery: the whole backbone and a fresh linear head trained on the labelled training split.

The recipe follows MAE's end-to-end fine-tuning (He et al., "Masked Autoencoders Are Scalable
Vision Learners", arXiv 2111.06377): AdamW, linear warm-up then cosine decay, layer-wise
learning-rate decay for vision transformers (`layer_decay`), BatchNorm in train mode; sized for
small data (a few epochs, a mild crop + flip made batched on the device). The backbone is a copy:
the evaluated target is never modified. Any `target.backbone` works, including the middle layer
of a SimCLRv2 projection head wrapped as a backbone (`RUN@head.1`, arXiv 2006.10029, section 2).

Options: epochs, lr, batch_size, optimizer (adamw | sgd), weight_decay, layer_decay, min_steps,
crop_min_scale, flip_p, seed; and the two regularisers the medical MAE study (arXiv 2210.12843) finds
significant beside layer-wise decay: `randaugment` (a RandAugment magnitude 0-30 on the training
images, data/randaugment.py; unset: none) and `drop_path` (stochastic depth up to this rate in the
copy being fine-tuned, eval/drop_path.py; default 0).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from pretrainlab.data.randaugment import check_magnitude
from pretrainlab.eval.classifier_training import (
    Classifier,
    ImageInputs,
    LossFunction,
    TrainingSettings,
    cross_entropy,
    fit,
    plan_steps,
    predict,
    seeded,
    top1,
)
from pretrainlab.eval.drop_path import check_rate, with_drop_path
from pretrainlab.eval.features import normalisation
from pretrainlab.eval.layer_decay import check_layer_decay, default_layer_decay, layer_decay_groups
from pretrainlab.eval.protocols import EvalContext

# The options FineTuning reads: the training settings, layer-wise learning-rate decay, RandAugment, drop-path.
FINETUNE_OPTIONS = (*TrainingSettings.option_names(), "layer_decay", "randaugment", "drop_path")


class FineTuning:
    """Fine-tuning set up once for an evaluation context: settings, normalisation, class count.

    Args:
        context: the evaluation; `context.options` override the training settings.
        defaults: a protocol's own defaults for `TrainingSettings` fields (the user's options win).
    """

    def __init__(self, context: EvalContext, **defaults: Any) -> None:
        self.context = context
        self.settings = TrainingSettings.from_options(context.options, **defaults)
        backbone = context.target.backbone
        given = context.options.get("layer_decay")
        self.layer_decay = check_layer_decay(given) if given is not None else default_layer_decay(backbone)
        magnitude = context.options.get("randaugment")
        self.randaugment = check_magnitude(magnitude) if magnitude is not None else None
        self.drop_path = check_rate(context.options.get("drop_path", 0.0))
        self.mean, self.std = normalisation(context.target, context.source.train.images)
        labels = [part.labels for part in (context.source.train, context.source.test) if part.labels is not None]
        self.num_classes = max([context.source.num_classes, *(int(part.max()) + 1 for part in labels)])

    def inputs(self, images: np.ndarray) -> ImageInputs:
        target = self.context.target
        return ImageInputs(images, target.in_chans, target.img_size, self.mean, self.std, self.context.device,
                           self.settings.view(target.img_size), self.randaugment)

    def new_model(self, seed: int, num_outputs: int | None = None) -> Classifier:
        """A copy of the target's backbone (with drop-path when asked) and a fresh head initialised by `seed`."""
        backbone = with_drop_path(copy.deepcopy(self.context.target.backbone), self.drop_path)
        with seeded(seed, self.context.device):
            return Classifier(backbone, num_outputs or self.num_classes)

    def train(self, model: Classifier, images: np.ndarray, loss: LossFunction, seed: int) -> list[float]:
        groups = layer_decay_groups(model, self.settings.weight_decay, self.layer_decay)
        return fit(model, self.inputs(images), loss, self.settings, self.context.device, seed, groups)

    def finetune(self, images: np.ndarray, labels: np.ndarray, seed: int) -> Classifier:
        """A new model fine-tuned with cross-entropy on `images` (N, H, W, C) uint8 and `labels` (N,)."""
        model = self.new_model(seed)
        targets = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=self.context.device)
        self.train(model, images, cross_entropy(targets), seed)
        return model

    def test_top1(self, model: Classifier) -> float:
        return top1(predict(model, self.inputs(self.context.source.test.images)), self.context.labels("test"))

    def describe(self, num_examples: int) -> dict[str, Any]:
        """The settings a result needs to be interpreted, with the epochs actually run on `num_examples`."""
        batch_size, steps_per_epoch, epochs = plan_steps(num_examples, self.settings)
        settings = self.settings
        randaugment = f", RandAugment magnitude {self.randaugment}" if self.randaugment is not None else ""
        return {"epochs": epochs, "steps": epochs * steps_per_epoch, "batch_size": batch_size, "lr": settings.lr,
                "optimizer": settings.optimizer, "weight_decay": settings.weight_decay,
                "layer_decay": self.layer_decay, "schedule": f"warm-up {settings.warmup_fraction:.0%} + cosine",
                "augmentation": f"crop scale ({settings.crop_min_scale}, 1), flip p={settings.flip_p}{randaugment}",
                "randaugment": self.randaugment, "drop_path": self.drop_path}
