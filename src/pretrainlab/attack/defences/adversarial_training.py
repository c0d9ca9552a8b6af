"""Adversarial fine-tuning: PGD adversarial training and TRADES as losses of the project's fine-tuning.

- PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv 1706.06083):
  every training batch is replaced by its PGD adversarial version (L-inf, random start), cross-entropy on it.
- TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", arXiv
  1901.08573): cross-entropy on the clean batch + beta * KL(clean prediction || prediction on the image that
  maximises that KL within the budget), the inner maximisation being torchattacks' TPGD.

Both train through eval/finetuning.py (same optimiser, schedule, crops and flips; the backbone is a copy),
with the attack run in pixel space on the augmented view, so eps is in [0, 1] units. The inner attack uses
BatchNorm's running statistics (eval mode), the update uses batch statistics, as Madry et al.'s code does.
The result is exported as a run folder like any pre-training run (backbone.safetensors + config.yaml), plus
`classifier.safetensors` holding the trained head, so every layer (eval, explain, attack) loads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from pretrainlab.atomic import atomic_path
from pretrainlab.attack.model import AttackedModel
from pretrainlab.backbones import Backbone, save_backbone
from pretrainlab.data.source import ImageSource
from pretrainlab.errors import PretrainlabError, unknown_name_message
from pretrainlab.eval.classifier_training import Classifier, LossFunction, plan_steps
from pretrainlab.eval.finetuning import FineTuning
from pretrainlab.eval.protocols import EvalContext
from pretrainlab.eval.target import EvalTarget

TRAINING_METHODS = ("pgd", "trades")
CLASSIFIER_FILE = "classifier.safetensors"


@dataclass(frozen=True)
class AdversarialTraining:
    """Args:
        method: "pgd" (Madry) or "trades".
        eps: L-inf budget of the training attack, pixel units.
        steps: iterations of the training attack (each costs a forward and backward pass).
        step_factor: step size = step_factor * eps / steps.
        beta: TRADES' weight of the robustness term.
    """

    method: str = "pgd"
    eps: float = 8 / 255
    steps: int = 5
    step_factor: float = 2.5
    beta: float = 6.0

    def __post_init__(self) -> None:
        if self.method not in TRAINING_METHODS:
            raise PretrainlabError(unknown_name_message("adversarial training method", self.method, TRAINING_METHODS))
        if not 0 < self.eps <= 1 or self.steps < 1 or self.beta < 0:
            raise PretrainlabError(f"adversarial training needs 0 < eps <= 1, steps >= 1 and beta >= 0, got "
                                   f"eps={self.eps} steps={self.steps} beta={self.beta}")

    @property
    def alpha(self) -> float:
        return self.step_factor * self.eps / self.steps


def adversarial_loss(config: AdversarialTraining, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     progress: tqdm | None = None) -> LossFunction:
    """A fine-tuning loss (model, normalised views (B, C, S, S), indices (B,)) -> scalar, on adversarial views."""
    mean, std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def loss(model: nn.Module, inputs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        pixels = (inputs * std + mean).clamp(0.0, 1.0)  # the augmented view back in [0, 1]
        # Shares the model's parameters; its mode is the model's, which torchattacks restores after attacking.
        pixel_model = AttackedModel(model, mean.flatten(), std.flatten()).train(model.training)
        targets = labels[indices]
        if config.method == "pgd":
            adversarial = torchattacks.PGD(pixel_model, eps=config.eps, alpha=config.alpha, steps=config.steps)(
                pixels, targets)
            value = F.cross_entropy(model((adversarial - mean) / std), targets)
        else:
            adversarial = torchattacks.TPGD(pixel_model, eps=config.eps, alpha=config.alpha, steps=config.steps)(
                pixels)
            clean_logits = model(inputs)
            adversarial_logits = model((adversarial - mean) / std)
            value = F.cross_entropy(clean_logits, targets) + config.beta * F.kl_div(
                F.log_softmax(adversarial_logits, dim=1), F.softmax(clean_logits, dim=1), reduction="batchmean")
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{float(value.detach()):.3f}")
        return value

    return loss


def adversarial_finetune(target: EvalTarget, source: ImageSource, device: torch.device, config: AdversarialTraining,
                         options: dict[str, Any] | None = None, seed: int = 0,
                         show_progress: bool = False) -> tuple[Classifier, FineTuning, list[float]]:
    """A copy of `target.backbone` with a fresh head, fine-tuned adversarially on the labelled training split.

    Returns the model, the fine-tuning set-up (settings, normalisation) and the mean loss of each epoch.
    """
    source.require_labels("adversarial fine-tuning")
    tuning = FineTuning(EvalContext(target, source, device, dict(options or {})))
    model = tuning.new_model(seed)
    labels = torch.as_tensor(np.asarray(source.train.labels, dtype=np.int64), device=device)
    _, steps_per_epoch, epochs = plan_steps(len(source.train), tuning.settings)
    with tqdm(total=epochs * steps_per_epoch, desc=f"adversarial fine-tuning ({config.method})", unit="step",
              disable=not show_progress, leave=False) as progress:
        loss = adversarial_loss(config, labels, tuning.mean.to(device), tuning.std.to(device), progress)
        losses = tuning.train(model, source.train.images, loss, seed)
    return model.eval(), tuning, losses


def export_adversarial_run(model: Classifier, tuning: FineTuning, config: AdversarialTraining, losses: list[float],
                           out: Path, seed: int) -> Path:
    """Writes `out` as a run folder: backbone.safetensors (timm-loadable), classifier.safetensors (the head),
    config.yaml (with the normalisation every loader reads) and metrics.jsonl (the loss of each epoch)."""
    out = Path(out)
    if (out / "backbone.safetensors").exists():
        raise PretrainlabError(f"{out} already holds a backbone; choose another --adv-out")
    if type(model.backbone) is not Backbone:
        raise PretrainlabError("adversarial fine-tuning exports a whole timm backbone; a selected representation "
                               "(RUN@head.N, RUN@dimD) cannot be exported as a run")
    context = tuning.context
    source, target = context.source, context.target
    out.mkdir(parents=True, exist_ok=True)
    save_backbone(model.backbone, out / "backbone.safetensors")
    head_state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()
                  if not key.startswith("backbone.")}
    with atomic_path(out / CLASSIFIER_FILE) as tmp:
        save_file(head_state, str(tmp), metadata={"num_classes": str(tuning.num_classes),
                                                  "embed_dim": str(model.backbone.embed_dim)})
    _, steps_per_epoch, _ = plan_steps(len(source.train), tuning.settings)
    with atomic_path(out / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps({"epoch": epoch, "step": (epoch + 1) * steps_per_epoch, "loss": loss}) + "\n"
                               for epoch, loss in enumerate(losses)))
    config_values = {
        "method": "adv_finetune", "backbone": model.backbone.name, "data": source.spec, "source": target.label,
        "seed": seed, "adversarial_training": asdict(config), "finetune": tuning.describe(len(source.train)),
        "resolved": {"img_size": target.img_size, "in_chans": target.in_chans,
                     "mean": [float(v) for v in tuning.mean], "std": [float(v) for v in tuning.std],
                     "num_classes": tuning.num_classes, "train_images": len(source.train),
                     "split": source.split_note},
    }
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config_values, sort_keys=False))
    return out


def load_run_classifier(target: EvalTarget) -> tuple[Classifier, dict[str, Any]]:
    """The backbone of a run written by `export_adversarial_run` with its trained head -> (Classifier, info)."""
    path = Path(target.run_dir) / CLASSIFIER_FILE
    if not path.is_file():
        raise PretrainlabError(f"{target.run_dir} has no {CLASSIFIER_FILE}: --head own needs a run written by "
                               "--defence adv_finetune (use --head linear or finetune)")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    num_classes = int(metadata["num_classes"])
    classifier = Classifier(target.backbone, num_classes)
    classifier.load_state_dict({**{f"backbone.{k}": v for k, v in target.backbone.state_dict().items()},
                                **load_file(str(path))})
    return classifier.eval(), {"num_classes": num_classes, "head_file": str(path)}
