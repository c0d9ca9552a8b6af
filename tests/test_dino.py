"""DINO and its iBOT masked-token option: centring, sharpening, view-pair cross-entropy, masked patches, multi-crop."""

from __future__ import annotations

import pytest
import timm
import torch

from pretrainlab.backbones import create_backbone, load_backbone, save_backbone
from pretrainlab.backbones.vit_parts import encode_any_size, pooled_any_size, replace_masked_tokens
from pretrainlab.config import build_config
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import DINOHead
from pretrainlab.losses import DINOLoss, MaskedTokenDistillationLoss
from pretrainlab.methods import METHODS, MethodContext


def make_dino(backbone: str = "tinycnn", in_chans: int = 3, **options):
    method_class = METHODS.get("dino")
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, "dino")
    context = MethodContext(img_size=32, in_chans=in_chans, mean=(0.5,) * in_chans, std=(0.25,) * in_chans)
    return method_class(create_backbone(backbone, 32, in_chans), config, context)


def naive_teacher_probabilities(logits: torch.Tensor, centre: torch.Tensor, temperature: float) -> torch.Tensor:
    exponent = torch.exp((logits - centre) / temperature)
    return exponent / exponent.sum(dim=-1, keepdim=True)


def naive_cross_entropy(teacher_probabilities: torch.Tensor, student_logits: torch.Tensor,
                        temperature: float) -> torch.Tensor:
    scaled = student_logits / temperature
    log_softmax = scaled - torch.log(torch.exp(scaled).sum(dim=-1, keepdim=True))
    return -(teacher_probabilities * log_softmax).sum(dim=-1)


# -- DINO loss -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("teachers", [1, 2, 3])
def test_dino_loss_averages_cross_entropy_over_pairs_of_different_views_and_updates_the_centre(teachers: int) -> None:
    """The loss sums the teachers per student view (one log-softmax per view); the naive pair loop must agree."""
    generator = torch.Generator().manual_seed(teachers)
    student = [torch.randn(4, 6, generator=generator) for _ in range(teachers + 2)]  # global views + 2 local views
    teacher = [torch.randn(4, 6, generator=generator) for _ in range(teachers)]
    criterion = DINOLoss(6, student_temperature=0.1, centre_momentum=0.8)
    criterion.centre.centre.copy_(torch.linspace(-1, 1, 6))
    centre = criterion.centre.centre.clone()
    loss = criterion(student, teacher, teacher_temperature=0.05)
    pair_losses = []
    for t in range(teachers):
        probabilities = naive_teacher_probabilities(teacher[t], centre, 0.05)
        for s in range(teachers + 2):
            if s != t:
                pair_losses.append(naive_cross_entropy(probabilities, student[s], 0.1).mean())
    assert len(pair_losses) == teachers * (teachers + 1)
    torch.testing.assert_close(loss, torch.stack(pair_losses).mean())
    expected_centre = 0.8 * centre + 0.2 * torch.cat(teacher).mean(dim=0)
    torch.testing.assert_close(criterion.centre.centre, expected_centre)


def test_sharpening_lowers_teacher_entropy_and_centring_removes_a_shared_offset() -> None:
    criterion = DINOLoss(5)
    logits = torch.randn(3, 5)
    sharp = criterion.centre.probabilities(logits, 0.04)
    soft = criterion.centre.probabilities(logits, 1.0)
    entropy = lambda p: -(p * p.clamp_min(1e-12).log()).sum(-1)  # noqa: E731
    assert bool((entropy(sharp) < entropy(soft)).all())
    offset = torch.tensor([5.0, 0, 0, 0, 0])
    criterion.centre.centre.copy_(offset)
    torch.testing.assert_close(criterion.centre.probabilities(logits + offset, 0.1),
                               naive_teacher_probabilities(logits, torch.zeros(5), 0.1))


def test_dino_loss_gets_no_gradient_into_the_teacher() -> None:
    student = [torch.randn(2, 4, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(2, 4, requires_grad=True) for _ in range(2)]
    DINOLoss(4)(student, teacher, 0.04).backward()
    assert all(t.grad is None for t in teacher) and all(s.grad is not None for s in student)


# -- iBOT masked-token loss ------------------------------------------------------------------------------
def test_masked_token_loss_averages_over_all_images_with_unmasked_ones_counting_zero() -> None:
    """iBOT's official code, DINOv2 and lightly's IBOTPatchLoss divide by every image, not the masked ones."""
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(3, 5, 7, generator=generator)
    teacher = torch.randn(3, 5, 7, generator=generator)
    mask = torch.tensor([[True, False, True, False, False], [False] * 5, [True, True, True, True, False]])
    criterion = MaskedTokenDistillationLoss(7, student_temperature=0.1, centre_momentum=0.5)
    centre = torch.randn(7, generator=generator)
    criterion.centre.centre.copy_(centre)
    loss = criterion(student, teacher, mask, teacher_temperature=0.07)
    per_image = []
    for image in range(3):  # image 1 has no masked patch and contributes zero
        tokens = [naive_cross_entropy(naive_teacher_probabilities(teacher[image, n], centre, 0.07), student[image, n],
                                      0.1) for n in range(5) if mask[image, n]]
        per_image.append(torch.stack(tokens).mean() if tokens else torch.zeros(()))
    torch.testing.assert_close(loss, torch.stack(per_image).sum() / 3)
    torch.testing.assert_close(criterion.centre.centre, 0.5 * centre + 0.5 * teacher.reshape(-1, 7).mean(dim=0))


def test_masked_token_loss_scale_does_not_depend_on_the_share_of_masked_images() -> None:
    """Issue 10's reproducer: 4 images, 2 masked (3 of 9 patches each), teacher temperature 0.04, 20 prototypes.

    Each image weighs 1/4 whether masked or not; the old loss (mean over the 2 masked images) was 2x this.
    """
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(4, 9, 20, generator=generator)
    teacher = torch.randn(4, 9, 20, generator=generator)
    mask = torch.zeros(4, 9, dtype=torch.bool)
    mask[0, [0, 4, 8]] = True
    mask[2, [1, 2, 3]] = True
    loss = MaskedTokenDistillationLoss(20)(student, teacher, mask, 0.04)
    masked_means = [naive_cross_entropy(naive_teacher_probabilities(teacher[i][mask[i]], torch.zeros(20), 0.04),
                                        student[i][mask[i]], 0.1).mean() for i in (0, 2)]
    torch.testing.assert_close(loss, (masked_means[0] + masked_means[1]) / 4)  # the old loss was twice this


def test_masked_token_loss_without_masks_is_zero_but_connected() -> None:
    student = torch.randn(2, 3, 4, requires_grad=True)
    loss = MaskedTokenDistillationLoss(4)(student, torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool), 0.04)
    loss.backward()
    assert float(loss.detach()) == 0.0 and student.grad is not None


# -- head and ViT helpers --------------------------------------------------------------------------------
def test_dino_head_last_layer_is_weight_normalised_and_can_be_frozen() -> None:
    head = DINOHead(8, hidden_dim=16, bottleneck_dim=4, out_dim=10)
    weight = head.last_layer.gain * torch.nn.functional.normalize(head.last_layer.direction, dim=1)
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(10))
    assert not head.last_layer.gain.requires_grad
    head(torch.randn(5, 8), freeze_last_layer=True).sum().backward()
    assert float(head.last_layer.direction.grad.abs().sum()) == 0.0
    assert float(head.mlp[0].weight.grad.abs().sum()) > 0


def test_pooled_any_size_equals_timm_dynamic_image_size_and_keeps_the_export_plain(tmp_path) -> None:
    backbone = create_backbone("vit_nano_patch4", 32, 3).eval()
    dynamic = timm.create_model("vit_nano_patch4", num_classes=0, in_chans=3, img_size=32, dynamic_img_size=True)
    dynamic.load_state_dict(backbone.model.state_dict())
    dynamic.eval()
    small = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(pooled_any_size(backbone, small), dynamic.forward_head(dynamic.forward_features(small),
                                                                                      pre_logits=True))
    full = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(pooled_any_size(backbone, full), backbone.pooled(full))
    torch.testing.assert_close(encode_any_size(backbone.model, full), backbone.tokens(full))
    save_backbone(backbone, tmp_path / "b.safetensors")
    assert "dynamic_img_size" not in load_backbone(tmp_path / "b.safetensors").create_kwargs


def test_replace_masked_tokens_only_touches_masked_positions() -> None:
    tokens, token = torch.randn(2, 4, 3), torch.tensor([9.0, 9.0, 9.0])
    mask = torch.tensor([[True, False, False, True], [False, False, False, False]])
    replaced = replace_masked_tokens(tokens, mask, token)
    torch.testing.assert_close(replaced[mask], token.expand(2, 3))
    torch.testing.assert_close(replaced[~mask], tokens[~mask])


# -- the method ------------------------------------------------------------------------------------------
def test_teacher_temperature_warms_up_linearly_then_stays() -> None:
    method = make_dino(warmup_teacher_temperature=0.04, teacher_temperature=0.07, teacher_temperature_warmup=0.5)
    assert method.teacher_temperature(0.0) == pytest.approx(0.04)
    assert method.teacher_temperature(0.25) == pytest.approx(0.055)
    assert method.teacher_temperature(0.9) == pytest.approx(0.07)


@pytest.mark.parametrize("backbone", ["tinycnn", "vit_nano_patch4"])
def test_multi_crop_declares_global_and_smaller_local_views(backbone: str, rgb_batch: torch.Tensor) -> None:
    method = make_dino(backbone, local_count=3)
    specs = method.view_specs()
    assert specs["global"].size == 32 and specs["local"].count == 3
    assert specs["local"].size < 32 and specs["local"].crop_scale[1] == pytest.approx(0.4)
    if backbone.startswith("vit"):
        assert specs["local"].size % method.backbone.patch_size == 0
    batch = method.prepare_batch(rgb_batch[:4], None, torch.Generator().manual_seed(0))
    assert batch.views["local"][0].images.shape[-1] == specs["local"].size
    method.train()
    outputs = method(batch)
    assert torch.isfinite(outputs["loss"])
    outputs["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())


def test_ibot_option_trains_the_mask_token_and_patch_head_on_a_vit(rgb_batch: torch.Tensor) -> None:
    method = make_dino("vit_nano_patch4", local_count=2, ibot_weight=1.0, ibot_mask_probability=1.0)
    method.train()
    batch = method.prepare_batch(rgb_batch[:4], None, torch.Generator().manual_seed(0))
    outputs = method(batch)
    assert float(outputs["ibot_loss"]) > 0
    outputs["loss"].backward()
    assert float(method.mask_token.grad.abs().sum()) > 0
    assert any(float(p.grad.abs().sum()) > 0 for p in method.patch_head.parameters() if p.grad is not None)
    assert float(method.patch_criterion.centre.centre.abs().sum()) > 0
    method.on_step_end(0, 10)
    assert float(method.progress) == pytest.approx(0.1)


def test_ibot_option_refuses_a_cnn() -> None:
    with pytest.raises(PretrainlabError, match="vision transformer"):
        make_dino("tinycnn", ibot_weight=1.0)


def test_local_size_must_fit_the_vit_patch() -> None:
    with pytest.raises(PretrainlabError, match="multiple of the ViT patch"):
        make_dino("vit_nano_patch4", local_size=14)
