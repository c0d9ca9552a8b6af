"""MoCo v2, MoCo v3, BYOL, SimSiam: momentum update, queue, InfoNCE and cosine losses against naive references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.data.views import Views
from pretrainlab.losses import InfoNCELoss, NegativeCosineSimilarity
from pretrainlab.methods import METHODS, Batch, MethodContext
from pretrainlab.methods.parts.momentum import MomentumTeacher, ema_update, frozen_copy, momentum_at
from pretrainlab.methods.parts.queue import MemoryQueue


def make_method(name: str, backbone: str = "tinycnn", in_chans: int = 3, **options):
    method_class = METHODS.get(name)
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, name)
    context = MethodContext(img_size=32, in_chans=in_chans, mean=(0.5,) * in_chans, std=(0.25,) * in_chans)
    return method_class(create_backbone(backbone, 32, in_chans), config, context)


def batch_of(**views: list[torch.Tensor]) -> Batch:
    """A Batch from given view images: name -> [(B, C, S, S), ...]."""
    def wrap(images: torch.Tensor) -> Views:
        return Views(images, torch.zeros(len(images), 4), torch.zeros(len(images), dtype=torch.bool))

    first = next(iter(views.values()))[0]
    return Batch(views={name: [wrap(x) for x in images] for name, images in views.items()}, images=first)


# -- momentum teacher ----------------------------------------------------------------------------------
def test_ema_update_matches_a_loop_over_parameters_and_leaves_the_teachers_buffers() -> None:
    """Official BYOL, MoCo and DINO average parameters only; batch-norm statistics are the teacher's own."""
    student = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    teacher = frozen_copy(student)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(torch.randn_like(parameter))
    student(torch.randn(8, 4))  # changes the student's batch-norm running statistics
    teacher_buffers = [b.clone() for b in teacher.buffers()]
    pairs = zip(teacher.parameters(), student.parameters(), strict=True)
    expected = [0.9 * t.detach().clone() + 0.1 * s.detach() for t, s in pairs]
    ema_update(teacher, student, 0.9)
    for got, want in zip(teacher.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want)
        assert not got.requires_grad
    for got, want in zip(teacher.buffers(), teacher_buffers, strict=True):
        torch.testing.assert_close(got, want)
    assert not torch.equal(teacher[1].running_mean, student[1].running_mean)


def test_momentum_schedule_is_a_cosine_from_base_to_final() -> None:
    assert momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert momentum_at(100, 100, 0.99) == pytest.approx(1.0)
    assert momentum_at(50, 100, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 2) + 1) / 2)
    values = [momentum_at(step, 100, 0.9) for step in range(101)]
    assert all(a <= b for a, b in zip(values[:-1], values[1:], strict=True))


def test_momentum_teacher_follows_every_named_part_at_the_scheduled_momentum() -> None:
    student = {"backbone": nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), "head": nn.Linear(3, 2)}
    teacher = MomentumTeacher(student, base=0.9, final=1.0)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for module in student.values():
            for parameter in module.parameters():
                parameter.add_(torch.randn_like(parameter))
    before = {name: [p.clone() for p in teacher[name].parameters()] for name in student}
    momentum = teacher.follow(student, 25, 100)
    assert momentum == pytest.approx(momentum_at(25, 100, 0.9, 1.0)) == pytest.approx(teacher.momentum)
    for name, module in student.items():  # a naive loop, part by part
        for got, old, new in zip(teacher[name].parameters(), before[name], module.parameters(), strict=True):
            torch.testing.assert_close(got, momentum * old + (1 - momentum) * new.detach())
    with pytest.raises(ValueError, match="parts"):
        teacher.follow({"backbone": student["backbone"]}, 26, 100)
    with pytest.raises(ValueError, match="momentum"):
        MomentumTeacher(student, base=0.99, final=0.9)


@pytest.mark.parametrize(("name", "attribute"), [("byol", "target"), ("mocov2", "key_encoder"),
                                                 ("mocov3", "momentum_encoder"), ("dino", "teacher"),
                                                 ("pixpro", "momentum_encoder")])
def test_every_ema_method_keeps_its_teacher_in_the_shared_helper(name: str, attribute: str) -> None:
    assert isinstance(getattr(make_method(name), attribute), MomentumTeacher)


# -- queue -----------------------------------------------------------------------------------------------
def test_queue_is_first_in_first_out_with_wrap_around() -> None:
    queue = MemoryQueue(size=5, dim=2, normalize=False)
    reference = [row.clone() for row in queue.items]  # a naive list, oldest slot overwritten first
    pointer = 0
    for step, count in enumerate([2, 2, 3, 1, 7]):
        batch = torch.arange(count * 2, dtype=torch.float32).view(count, 2) + 100 * step
        queue.push(batch)
        for row in batch[-5:]:  # a batch longer than the queue keeps its newest rows
            reference[pointer] = row
            pointer = (pointer + 1) % 5
        torch.testing.assert_close(queue.items, torch.stack(reference))
        assert int(queue.pointer) == pointer
    assert int(queue.filled) == 5 and len(queue.valid()) == 5


def test_queue_valid_holds_only_written_rows_before_it_is_full() -> None:
    queue = MemoryQueue(size=6, dim=3)
    queue.push(torch.ones(4, 3))
    assert queue.valid().shape == (4, 3) and int(queue.filled) == 4


# -- InfoNCE ---------------------------------------------------------------------------------------------
def naive_info_nce(queries, keys, negatives, temperature) -> torch.Tensor:
    """One query at a time: -log(exp(q.k+/t) / (exp(q.k+/t) + sum exp(q.n/t))), cosine similarities."""
    losses = []
    for index in range(len(queries)):
        query = queries[index] / queries[index].norm()
        candidates = keys if negatives is None else torch.cat([keys[index : index + 1], negatives])
        positive = index if negatives is None else 0
        scores = torch.stack([query @ (c / c.norm()) / temperature for c in candidates])
        losses.append(-(scores[positive] - torch.logsumexp(scores, dim=0)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("use_queue", [True, False])
def test_info_nce_matches_naive_reference(use_queue: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    queries = torch.randn(6, 8, generator=generator, requires_grad=True)
    keys = torch.randn(6, 8, generator=generator)
    negatives = torch.randn(10, 8, generator=generator) if use_queue else None
    loss = InfoNCELoss(0.2)(queries, keys, negatives)
    reference_queries = queries.detach().clone().requires_grad_(True)
    reference = naive_info_nce(reference_queries, keys, negatives, 0.2)
    torch.testing.assert_close(loss, reference)
    loss.backward()
    reference.backward()
    torch.testing.assert_close(queries.grad, reference_queries.grad)


def test_info_nce_rejects_bad_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)


# -- cosine losses ---------------------------------------------------------------------------------------
def test_negative_cosine_matches_byol_normalised_mse_and_stops_the_target_gradient() -> None:
    generator = torch.Generator().manual_seed(4)
    prediction = torch.randn(5, 7, generator=generator, requires_grad=True)
    target = torch.randn(5, 7, generator=generator, requires_grad=True)
    value = NegativeCosineSimilarity()(prediction, target)
    rows = zip(prediction, target, strict=True)
    normalised_mse = torch.stack([((p / p.norm() - t / t.norm()) ** 2).sum() for p, t in rows])
    torch.testing.assert_close(2 + 2 * value, normalised_mse.mean())
    value.backward()
    assert target.grad is None and prediction.grad is not None


def test_byol_loss_is_symmetrised_normalised_mse_of_predictions_and_targets() -> None:
    method = make_method("byol")
    method.train()
    first, second = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    loss = method(batch_of(**{"global": [first], "global_second": [second]}))["loss"]
    with torch.no_grad():
        predictions = [method.predictor(method.projector(method.backbone.pooled(x))) for x in (first, second)]
        targets = [method.target["projector"](method.target["backbone"].pooled(x)) for x in (first, second)]

    def mse(p, z) -> torch.Tensor:
        return ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(dim=1).mean()

    torch.testing.assert_close(loss.detach(), mse(predictions[0], targets[1]) + mse(predictions[1], targets[0]))


def test_simsiam_loss_matches_paper_formula_and_gets_no_gradient_through_the_target() -> None:
    method = make_method("simsiam")
    method.train()
    images = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    loss = method(batch_of(**{"global": images}))["loss"]
    with torch.no_grad():
        projections = [method.projector(method.backbone.pooled(x)) for x in images]
        predictions = [method.predictor(z) for z in projections]

    def distance(p, z) -> torch.Tensor:  # D(p, z) = -p/|p| . z/|z|
        return -torch.stack([(a / a.norm()) @ (b / b.norm()) for a, b in zip(p, z, strict=True)]).mean()

    expected = distance(predictions[0], projections[1]) / 2 + distance(predictions[1], projections[0]) / 2
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)


# -- MoCo v2 and v3 methods --------------------------------------------------------------------------------
def test_mocov2_scores_against_the_old_queue_then_enqueues_normalised_keys() -> None:
    method = make_method("mocov2", queue_size=20, shuffle_bn=False)  # shuffled BN: tests/test_shuffled_bn.py
    method.train()
    query_images, key_images = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    old_queue = method.queue.items.clone()
    loss = method(batch_of(**{"global": [query_images, key_images]}))["loss"]
    with torch.no_grad():
        queries = method.projector(method.backbone.pooled(query_images))
        keys = method.key_encoder["projector"](method.key_encoder["backbone"].pooled(key_images))
    torch.testing.assert_close(loss.detach(), naive_info_nce(queries, keys, old_queue, 0.2), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(method.queue.items[:8], nn.functional.normalize(keys, dim=1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(method.queue.items[8:], old_queue[8:])
    loss.backward()
    assert all(p.grad is None for p in method.key_encoder.parameters())


def test_mocov2_key_encoder_follows_the_query_encoder_by_ema() -> None:
    method = make_method("mocov2", momentum=0.9, final_momentum=0.9)
    with torch.no_grad():
        for parameter in method.query_encoder().parameters():
            parameter.add_(1.0)
    before = [p.clone() for p in method.key_encoder.parameters()]
    method.on_step_end(0, 10)
    for key, old, query in zip(method.key_encoder.parameters(), before, method.query_encoder().parameters(),
                               strict=True):
        torch.testing.assert_close(key, 0.9 * old + 0.1 * query)


def test_mocov3_loss_is_symmetric_in_batch_infonce_scaled_by_twice_the_temperature() -> None:
    method = make_method("mocov3", temperature=0.5)
    method.train()
    first, second = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    loss = method(batch_of(**{"global": [first], "global_second": [second]}))["loss"]
    with torch.no_grad():
        queries = [method.predictor(method.projector(method.backbone.pooled(x))) for x in (first, second)]
        keys = [method.momentum_encoder["projector"](method.momentum_encoder["backbone"].pooled(x))
                for x in (first, second)]
    expected = 2 * 0.5 * (naive_info_nce(queries[0], keys[1], None, 0.5)
                          + naive_info_nce(queries[1], keys[0], None, 0.5))
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)


def test_mocov3_on_a_vit_freezes_the_patch_projection_and_uses_a_three_layer_projector() -> None:
    method = make_method("mocov3", backbone="vit_nano_patch4")
    method.train()
    images = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    method(batch_of(**{"global": images[:1], "global_second": images[1:]}))["loss"].backward()
    patch_parameters = list(method.backbone.model.patch_embed.parameters())
    assert all(not p.requires_grad and p.grad is None for p in patch_parameters)
    assert any(p.grad is not None for p in method.backbone.model.blocks.parameters())
    assert sum(isinstance(m, nn.Linear) for m in method.projector.modules()) == 3
    cnn = make_method("mocov3")
    assert sum(isinstance(m, nn.Linear) for m in cnn.projector.modules()) == 2


def test_byol_target_starts_equal_and_moves_toward_the_online_network() -> None:
    method = make_method("byol", momentum=0.5)
    for target, online in zip(method.target.parameters(), method.online().parameters(), strict=True):
        torch.testing.assert_close(target, online)
    with torch.no_grad():
        for parameter in method.online().parameters():
            parameter.mul_(3.0)
    before = [p.clone() for p in method.target.parameters()]
    method.on_step_end(0, 4)  # the cosine schedule starts at the base momentum
    for target, old, online in zip(method.target.parameters(), before, method.online().parameters(), strict=True):
        torch.testing.assert_close(target, 0.5 * old + 0.5 * online)
