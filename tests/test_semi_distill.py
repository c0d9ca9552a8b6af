"""Semi-supervised distillation: the soft-target loss against a naive formula, teacher and student records."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from protocol_data import small_source

from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, evaluate, load_target
from pretrainlab.eval.protocols.semi_distill import distillation_loss, soft_target_cross_entropy


def test_soft_target_cross_entropy_matches_a_naive_formula():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 3)
    temperature = 2.0
    naive = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        t_norm = sum(math.exp(v / temperature) for v in t_row)
        s_norm = sum(math.exp(v / temperature) for v in s_row)
        naive -= sum(math.exp(t / temperature) / t_norm * (s / temperature - math.log(s_norm))
                     for s, t in zip(s_row, t_row, strict=True))
    assert soft_target_cross_entropy(student, teacher, temperature).item() == pytest.approx(naive / 5, rel=1e-5)
    one_hot_teacher = F.one_hot(torch.tensor([2, 0, 1, 1, 0]), 3).float() * 1e4  # a hard label, softmax = one-hot
    assert soft_target_cross_entropy(student, one_hot_teacher, 1.0).item() == pytest.approx(
        F.cross_entropy(student, torch.tensor([2, 0, 1, 1, 0])).item(), rel=1e-5)


def test_the_teacher_labels_the_students_views_and_stays_frozen():
    teacher = torch.nn.Linear(4, 3)
    student = torch.nn.Linear(4, 3)
    loss_function = distillation_loss(teacher, temperature=1.0)
    inputs = torch.randn(6, 4)
    loss = loss_function(student, inputs, torch.arange(6))
    assert loss.item() == pytest.approx(soft_target_cross_entropy(student(inputs), teacher(inputs), 1.0).item())
    loss.backward()
    assert student.weight.grad is not None and teacher.weight.grad is None and not teacher.training


def test_semi_distill_reports_teacher_and_student(builtin_source):
    source = small_source(builtin_source, 10, 4)
    torch.manual_seed(0)
    target = load_target("timm:tinycnn", 28, 1)
    before = {name: value.clone() for name, value in target.backbone.state_dict().items()}
    options = {"label_fraction": 0.3, "epochs": 1, "min_steps": 2, "batch_size": 25, "temperature": 2.0}
    context = EvalContext(target, source, torch.device("cpu"), options)
    teacher, student = evaluate(context, "semi_distill")
    assert (teacher.metric, student.metric) == ("teacher_top1@30%", "student_top1@30%")
    assert student.settings["labelled_images"] == 30 and student.settings["unlabelled_images"] == 100
    assert student.settings["steps"] == 4 and student.settings["teacher"]["steps"] == 2
    assert all(torch.equal(before[name], value) for name, value in target.backbone.state_dict().items())
    context.options["student_init"] = "teacher"
    assert len(evaluate(context, "semi_distill")) == 2
    context.options["student_init"] = "random"
    with pytest.raises(PretrainlabError, match="student_init in"):
        evaluate(context, "semi_distill")
