"""Linear interpreters reproduce a ReLU network exactly; dissection IoU by hand; visualisation and COMET behave."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from pretrainlab.errors import PretrainlabError
from pretrainlab.explain.comet import COMET, COMETSettings, train_comet
from pretrainlab.explain.dissect import dissect, top_patches
from pretrainlab.explain.linear_interpreter import bias_share, check_piecewise_linear, linear_system
from pretrainlab.explain.model import PooledBackbone, ProbedBackbone, resolve_layer
from pretrainlab.explain.visualize import FourierImage, channel_activation, invert, maximise_channels
from tests.explain_data import random_images, tiny_target


class ResidualReLUNet(nn.Module):
    """Conv, batch norm (eval), in-place ReLU, max-pool, a residual add, average pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(2))
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.fc(self.pool(x + self.branch(x)).flatten(1))


@pytest.mark.parametrize("kind", ["residual", "tinycnn"])
def test_linear_interpreter_reproduces_a_relu_network_exactly(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "residual":
        model = ResidualReLUNet()
        with torch.no_grad():  # non-trivial batch-norm statistics, so its shift is a real bias
            model.stem[1].running_mean.uniform_(-1, 1)
            model.stem[1].running_var.uniform_(0.5, 2)
        x = torch.randn(1, 1, 8, 8)
    else:
        backbone = tiny_target("cnn").backbone
        model = ProbedBackbone(backbone, nn.Linear(backbone.embed_dim, 5))
        x = random_images(1)
    model.eval()
    matrix, bias, output = linear_system(model, x, basis_batch=50)
    with torch.no_grad():
        expected = model(x)[0]
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(matrix @ x.reshape(-1) + bias, expected, atol=1e-5, rtol=1e-5)
    jacobian = torch.autograd.functional.jacobian(lambda inputs: model(inputs)[0], x).reshape(len(expected), -1)
    torch.testing.assert_close(matrix, jacobian, atol=1e-5, rtol=1e-4)  # A is the local Jacobian
    share = bias_share(matrix, bias, x)
    assert ((share >= 0) & (share <= 1)).all()


def test_linear_interpreter_refuses_smooth_non_linearities() -> None:
    with pytest.raises(PretrainlabError, match="GELU"):
        check_piecewise_linear(nn.Sequential(nn.Linear(3, 3), nn.GELU()))


def test_dissection_iou_by_hand() -> None:
    activations = torch.zeros(2, 2, 2, 2)  # (N, C, h, w)
    activations[0, 0, 0, 0] = 5.0  # channel 0 fires top-left on image 0
    activations[1, 1, :, 1] = 5.0  # channel 1 fires on the right column of image 1
    masks = np.zeros((2, 2, 2), dtype=np.uint8)
    masks[0, 0, 0] = 1
    masks[1, :, 1] = 2
    masks[1, 0, 0] = 1
    result = dissect(activations, masks, concepts=3, quantile=0.2)  # thresholds just below 5 (the top 20 %)
    # channel 0: on = {img0 (0,0)}; concept 1 = {img0 (0,0), img1 (0,0)} -> IoU 1/2; concept 2 -> 0
    # channel 1: on = {img1 (0,1), (1,1)}; concept 2 = the same pixels -> IoU 1
    np.testing.assert_allclose(result.iou[:, 1:], [[0.5, 0.0], [0.0, 1.0]])
    assert result.best.tolist() == [1, 2] and result.labelled.all()
    crops = top_patches(activations, np.zeros((2, 8, 8, 1), dtype=np.uint8), [0, 1], count=1, patch=4)
    assert crops[0][0].shape == (4, 4, 1)


def test_fourier_images_stay_in_range_and_blur_smooths() -> None:
    image = FourierImage(2, 1, 16, torch.Generator().manual_seed(0), init_scale=1.0)
    pixels = image()
    pixels = pixels.detach()
    assert pixels.shape == (2, 1, 16, 16) and float(pixels.min()) >= 0 and float(pixels.max()) <= 1
    roughness = lambda p: (p[..., 1:] - p[..., :-1]).abs().mean()  # noqa: E731
    before = roughness(image())
    image.blur(2.0)
    assert roughness(image()) < before


def test_maximisation_raises_the_channel_and_inversion_lowers_the_error() -> None:
    backbone = tiny_target("cnn").backbone.eval()
    model, layer = PooledBackbone(backbone), resolve_layer(backbone, "stages.1")
    mean, std = torch.tensor([0.13]), torch.tensor([0.3])
    start = FourierImage(1, 1, 28, torch.Generator().manual_seed(0))()
    with torch.no_grad():
        baseline = channel_activation(model, layer, None, (start - 0.13) / 0.3)[0, 5].mean()
    _, reached = maximise_channels(model, layer, None, [5], 28, mean, std, steps=20)
    assert float(reached[0]) > float(baseline)
    target = random_images(1)
    _, early = invert(model, layer, None, target, mean, std, steps=2)
    _, late = invert(model, layer, None, target, mean, std, steps=30)
    assert late < early


def test_maximisation_wakes_a_channel_the_relu_holds_at_zero() -> None:
    """A channel that is zero everywhere on the starting image still gets an image that excites it (the objective is
    taken before the stage's ReLU; after it, there would be no gradient to follow)."""
    backbone = tiny_target("cnn").backbone.eval()
    model, layer = PooledBackbone(backbone), resolve_layer(backbone, "stages.2")
    mean, std = torch.tensor([0.13]), torch.tensor([0.3])
    start = FourierImage(1, 1, 28, torch.Generator().manual_seed(0))()
    with torch.no_grad():
        baseline = channel_activation(model, layer, None, (start - 0.13) / 0.3)[0].amax(dim=(1, 2))  # (C,)
    dead = torch.nonzero(baseline == 0).flatten()[:2].tolist()
    assert dead, "the random tinycnn should have channels that are zero on a flat grey image"
    _, reached = maximise_channels(model, layer, None, dead, 28, mean, std, steps=20)
    assert (reached > 0).all()


def test_comet_trains_a_mask_and_keeps_its_detector_frozen() -> None:
    backbone = tiny_target("cnn").backbone
    detector = ProbedBackbone(tiny_target("cnn").backbone, nn.Linear(backbone.embed_dim, 3)).eval()
    frozen = [p.clone() for p in detector.parameters()]
    x, labels = random_images(16), torch.arange(16) % 3
    model = COMET(backbone, detector, 3, False, COMETSettings(epochs=2, batch_size=8), x)
    history = train_comet(model, x, labels)
    assert len(history) == 2 and all(np.isfinite(history))
    logits, mask = model(x[:4])
    assert logits.shape == (4, 3) and mask.shape == (4, 1, 28, 28) and 0 <= float(mask.min()) <= float(mask.max()) <= 1
    assert all(torch.equal(a, b) for a, b in zip(frozen, detector.parameters(), strict=True))
