"""Semi-supervised distillation: SimCLRv2's third step.

Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models are Strong
Semi-Supervised Learners", arXiv 2006.10029, section 2, equation 2: the model fine-tuned on the
labelled fraction is a teacher whose temperature-softened predictions are the targets of a student
trained on all training images without their labels,

    L = - sum_x sum_y P_T(y | x; tau) log P_S(y | x; tau).

As in the paper's ImageNet experiments, only the distillation loss is used (no labelled term), the
student has the teacher's architecture (self-distillation) and the teacher scores the same
augmented view as the student. The student starts from the pre-trained backbone with a fresh head
(`student_init: pretrained`), or from the teacher itself (`student_init: teacher`).

Options: label_fraction (default 0.1), temperature (default 1.0, the paper's), student_init,
seed, and fine-tuning's options (epochs, lr, ...) for both the teacher and the student.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.data.subsets import class_balanced_subset, fraction_label
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.classifier_training import LossFunction
from pretrainlab.eval.finetuning import FINETUNE_OPTIONS, FineTuning
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, takes_options
from pretrainlab.eval.record import EvalResult

STUDENT_INITS = ("pretrained", "teacher")


def soft_target_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                              temperature: float) -> torch.Tensor:
    """Mean over the batch of -sum_y softmax(teacher / tau) * log_softmax(student / tau); logits (B, K)."""
    targets = F.softmax(teacher_logits / temperature, dim=1)
    return -(targets * F.log_softmax(student_logits / temperature, dim=1)).sum(dim=1).mean()


def distillation_loss(teacher: nn.Module, temperature: float) -> LossFunction:
    """The student's loss on a batch of views: the frozen teacher (eval mode) labels the same views."""
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)

    def loss(student: nn.Module, inputs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(inputs)  # (B, K)
        return soft_target_cross_entropy(student(inputs), teacher_logits, temperature)

    return loss


@PROTOCOLS.register("semi_distill")
@takes_options("label_fraction", "temperature", "student_init", *FINETUNE_OPTIONS)
def semi_distill(context: EvalContext) -> list[EvalResult]:
    """Teacher and student top-1 on the test split."""
    started = time.perf_counter()
    seed = int(context.options.get("seed", 0))
    fraction = float(context.options.get("label_fraction", 0.1))
    temperature = float(context.options.get("temperature", 1.0))
    student_init = str(context.options.get("student_init", "pretrained"))
    if student_init not in STUDENT_INITS or temperature <= 0:
        raise PretrainlabError(f"semi_distill needs student_init in {STUDENT_INITS} and temperature > 0, "
                               f"got {student_init!r} and {temperature}")
    train = context.source.train
    subset = class_balanced_subset(train.labels, fraction, seed, context.source.classes)
    tuning = FineTuning(context)
    teacher = tuning.finetune(train.images[subset], train.labels[subset], seed)
    teacher_top1 = tuning.test_top1(teacher)
    teacher_seconds = time.perf_counter() - started
    student = copy.deepcopy(teacher) if student_init == "teacher" else tuning.new_model(seed + 1)
    tuning.train(student, train.images, distillation_loss(teacher, temperature), seed + 1)
    student_top1 = tuning.test_top1(student)
    label = fraction_label(fraction)
    settings = {**context.base_settings(), **tuning.describe(len(train)), "label_fraction": fraction,
                "labelled_images": len(subset), "unlabelled_images": len(train), "temperature": temperature,
                "student_init": student_init, "teacher": tuning.describe(len(subset)), "seed": seed}
    return [
        EvalResult("semi_distill", context.source.spec, f"teacher_top1@{label}", teacher_top1, teacher_seconds,
                   settings=settings, backbone=context.target.label),
        EvalResult("semi_distill", context.source.spec, f"student_top1@{label}", student_top1,
                   time.perf_counter() - started, settings=settings, backbone=context.target.label),
    ]
