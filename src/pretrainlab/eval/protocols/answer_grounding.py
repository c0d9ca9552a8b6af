"""Answer grounding probe: questions about composed canvases answered with a mask from frozen feature maps.

Khoshsirat and Kambhamettu, "Sentence Attention Blocks for Answer Grounding", arXiv 2309.11593. The
questions and their answer regions are generated from the canvases' annotations (data/grounding_questions.py:
"where is the 7?", "which digit is left of the 3?"); the probe is a decoder with Sentence Attention Blocks on
the frozen, standardised last feature map (language/answer_grounding.py), trained on the training canvases'
questions with per-pixel binary cross-entropy plus a soft Dice loss; a pixel is in the grounded region when
its logit is above 0.

Metrics on the test canvases' questions, in percent: `IoU`, the mean over questions of the IoU of the
grounded region with the answer region (the task's usual score), and the same over each kind of question
(`IoU_where`, `IoU_relation`). `iou_all_objects` in the settings, the IoU of every object pixel of the canvas
with the answer, is what a probe that ignores the question would reach by marking all digits.

Options: img_size (input size; default the canvases' own), questions_per_kind (per canvas, default 2),
grounding_epochs, grounding_lr, grounding_batch_size, grounding_weight_decay, grounding_min_steps; seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pretrainlab.data.grounding_questions import (
    RELATION,
    WHERE,
    GroundingQuestion,
    answer_masks,
    grounding_questions,
    needs_canvas_cells,
)
from pretrainlab.eval.classifier_training import TrainingSettings, fit, seeded
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, applies_when, takes_options
from pretrainlab.eval.protocols.dense import frozen_maps, input_size
from pretrainlab.eval.record import EvalResult
from pretrainlab.language.answer_grounding import GroundingHead, mask_iou

HEAD_DEFAULTS = {"epochs": 8, "lr": 1e-2, "batch_size": 64, "weight_decay": 1e-4, "min_steps": 400,
                 "warmup_fraction": 0.05}


@dataclass
class QuestionInputs:
    """Training examples for `fit`: question i reads the map of its canvas; a batch is (maps, ids, offsets)."""

    maps: torch.Tensor  # (N, C, h, w) standardised feature maps of the canvases
    questions: list[GroundingQuestion]
    head: GroundingHead
    device: torch.device

    def __len__(self) -> int:
        return len(self.questions)

    def train_batch(self, indices: np.ndarray, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        return self.eval_batch(indices)

    def eval_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        chosen = [self.questions[int(i)] for i in indices]
        ids, offsets = self.head.questions.token_ids([q.text for q in chosen])
        maps = self.maps[[q.image for q in chosen]]
        return maps.to(self.device), ids.to(self.device), offsets.to(self.device)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of sigmoid(logits) and target (B, H, W): answers cover a few % of a canvas, and
    cross-entropy alone settles on marking nothing (measured: IoU 0 for every backbone)."""
    probabilities = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    overlap = (probabilities * target).sum(dim=1)
    return (1 - (2 * overlap + 1) / (probabilities.sum(dim=1) + target.sum(dim=1) + 1)).mean()


@torch.no_grad()
def grounded_regions(head: GroundingHead, inputs: QuestionInputs, batch_size: int = 256) -> torch.Tensor:
    """(Q, H, W) bool: where the head's logit is above 0, for every question of `inputs`."""
    head.eval()
    parts = [head(*inputs.eval_batch(np.arange(start, min(start + batch_size, len(inputs))))).cpu() > 0
             for start in range(0, len(inputs), batch_size)]
    return torch.cat(parts)


def mean_iou(values: torch.Tensor, questions: list[GroundingQuestion], kind: str | None = None) -> float:
    chosen = [i for i, q in enumerate(questions) if kind is None or q.kind == kind]
    return float(values[chosen].mean()) * 100 if chosen else float("nan")


@PROTOCOLS.register("answer_grounding")
@applies_when(needs_canvas_cells)
@takes_options("img_size", "questions_per_kind", *TrainingSettings.option_names("grounding_"))
def answer_grounding_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    seed, source = int(context.options.get("seed", 0)), context.source
    settings = TrainingSettings.from_options(context.options, prefix="grounding_", **HEAD_DEFAULTS)
    per_kind = int(context.options.get("questions_per_kind", 2))
    names = source.classes or [str(k) for k in range(int(source.train.masks.max()))]
    train_questions = grounding_questions(source.train, names, per_kind)
    test_questions = grounding_questions(source.test, names, per_kind)
    train_maps, test_maps = frozen_maps(context, -1, input_size(context))
    with seeded(seed, context.device):
        head = GroundingHead(train_maps.shape[1], [q.text for q in train_questions], source.image_size)
    answers = torch.from_numpy(answer_masks(train_questions, source.train.masks)).to(context.device)

    def loss(model: GroundingHead, batch: tuple[torch.Tensor, ...], indices: torch.Tensor) -> torch.Tensor:
        logits, target = model(*batch), answers[indices].float()  # (B, H, W)
        return F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits, target)

    losses = fit(head, QuestionInputs(train_maps, train_questions, head, context.device), loss, settings,
                 context.device, seed)
    truth = torch.from_numpy(answer_masks(test_questions, source.test.masks))
    ious = mask_iou(grounded_regions(head, QuestionInputs(test_maps, test_questions, head, context.device)), truth)
    objects = torch.from_numpy(source.test.masks > 0)[[q.image for q in test_questions]]
    values = [("IoU", mean_iou(ious, test_questions)), ("IoU_where", mean_iou(ious, test_questions, WHERE)),
              ("IoU_relation", mean_iou(ious, test_questions, RELATION))]
    details = {**context.base_settings(), "seed": seed, "input_size": input_size(context),
               "train_questions": len(train_questions), "test_questions": len(test_questions),
               "questions_per_kind": per_kind, "head": "2 x (sentence attention block, 3x3 conv), 1x1 conv",
               "epochs": settings.epochs, "lr": settings.lr, "final_train_loss": round(losses[-1], 5),
               "examples": [q.text for q in test_questions[:4]],
               "iou_all_objects": round(mean_iou(mask_iou(objects, truth), test_questions), 3)}
    seconds = time.perf_counter() - started
    return [EvalResult("answer_grounding", source.spec, metric, value, seconds, settings=details,
                       backbone=context.target.label) for metric, value in values]
