"""CAM wrappers against pytorch-grad-cam called directly, Eigen-CAM against numpy's SVD, Captum wrappers against
Captum, RISE on a model that looks at one patch only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from captum.attr import IntegratedGradients, Saliency
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from pretrainlab.explain.attribution import CAM_METHODS, Explained, attribution_maps, not_applicable
from pretrainlab.explain.attribution.cam import CAM_CLASSES, cam_maps
from pretrainlab.explain.attribution.gradients import gradient_maps, relevance_maps
from pretrainlab.explain.attribution.rise import rise_maps
from pretrainlab.explain.model import (
    PooledBackbone,
    ProbedBackbone,
    default_cam_layer,
    layer_activations,
    resolve_layer,
    token_reshape,
)
from tests.explain_data import assert_maps, random_images, tiny_target


def probed(name: str) -> tuple[ProbedBackbone, object]:
    backbone = tiny_target(name).backbone.eval()
    torch.manual_seed(1)
    return ProbedBackbone(backbone, nn.Linear(backbone.embed_dim, 3)).eval(), backbone


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_cam_wrappers_equal_pytorch_grad_cam_called_directly(name: str) -> None:
    model, backbone = probed(name)
    x = random_images(2)
    layer = resolve_layer(backbone, default_cam_layer(backbone, x))
    reshape = token_reshape(backbone, 28, 28)
    classes = np.array([0, 2])
    for method in CAM_METHODS:
        ours = cam_maps(model, layer, x, classes, method, reshape)
        library = CAM_CLASSES[method](model=model, target_layers=[layer], reshape_transform=reshape)
        direct = library(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
        library.activations_and_grads.release()
        assert_maps(ours, 2, 28)
        np.testing.assert_allclose(ours, direct, atol=1e-5, err_msg=method)


def test_vit_token_grid_is_inferred_from_the_input_size() -> None:
    backbone = tiny_target("vit", size=20).backbone.eval()  # 5x5 patches of 4 px, one class token dropped
    layer = resolve_layer(backbone, default_cam_layer(backbone, random_images(1, 20)))
    maps = layer_activations(PooledBackbone(backbone), layer, random_images(1, 20), token_reshape(backbone, 20, 20))
    assert maps.shape == (1, backbone.embed_dim, 5, 5)


def test_eigen_cam_is_the_first_principal_component_of_the_activations() -> None:
    backbone = tiny_target("cnn").backbone.eval()
    x = random_images(3, seed=4)
    layer = resolve_layer(backbone, "stages.0")  # stride 1: the map has the input's size, no resizing involved
    ours = cam_maps(PooledBackbone(backbone), layer, x, None, "eigencam")
    with torch.no_grad():
        activations = layer_activations(PooledBackbone(backbone), layer, x).numpy()  # (B, C, H, W)
    for image, activation in zip(ours, activations, strict=True):
        samples = activation.reshape(activation.shape[0], -1).T  # (H W, C): pixels as samples
        centred = samples - samples.mean(axis=0)
        _, _, right = np.linalg.svd(centred, full_matrices=False)
        component = (centred @ right[0]).reshape(activation.shape[1:])
        candidates = []
        for sign in (1, -1):  # a singular vector's sign is arbitrary
            positive = np.maximum(sign * component, 0)
            candidates.append((positive - positive.min()) / (positive.max() - positive.min() + 1e-7))
        assert min(np.abs(image - c).max() for c in candidates) < 1e-4


def test_gradient_wrappers_equal_captum_called_directly() -> None:
    model, _ = probed("cnn")
    x = random_images(2)
    classes = np.array([1, 0])
    targets = torch.tensor([1, 0])
    direct = Saliency(model).attribute(x.clone().requires_grad_(), target=targets, abs=True)
    np.testing.assert_allclose(gradient_maps(model, x, classes, "saliency"), relevance_maps(direct), atol=1e-6)
    integrated = IntegratedGradients(model).attribute(x.clone().requires_grad_(), baselines=torch.zeros_like(x),
                                                      target=targets, n_steps=32)
    np.testing.assert_allclose(gradient_maps(model, x, classes, "integrated_gradients"), relevance_maps(integrated),
                               atol=1e-4)
    for method in ("guided_backprop", "deconvnet"):
        assert_maps(gradient_maps(model, x, classes, method), 2, 28)


def test_relu_methods_do_not_apply_to_a_gelu_transformer() -> None:
    model, backbone = probed("vit")
    explained = Explained(model, PooledBackbone(backbone), backbone.model.blocks[-1].norm1)
    assert not_applicable("guided_backprop", explained) is not None
    assert not_applicable("saliency", explained) is None
    assert not_applicable("gradcam", Explained(None, PooledBackbone(backbone), backbone.model.blocks[-1])) is not None
    assert not_applicable("eigencam", Explained(None, PooledBackbone(backbone), backbone.model.blocks[-1])) is None


class PatchModel(nn.Module):
    """Class 1's logit is the mean of the top-left 8x8 patch; class 0's is zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = x[:, :, :8, :8].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(patch), 4 * patch], dim=1)


def test_rise_finds_the_only_patch_the_model_looks_at() -> None:
    x = torch.ones(1, 1, 24, 24)
    maps = rise_maps(PatchModel(), x, np.array([1]), num_masks=1024, cells=6, seed=0)
    assert_maps(maps, 1, 24)
    assert maps[0, :8, :8].mean() > maps[0, 12:, 12:].mean() + 0.3  # measured 0.80 vs 0.33 (seed 0)


def test_every_method_gives_maps_through_the_common_entry() -> None:
    model, backbone = probed("cnn")
    explained = Explained(model, PooledBackbone(backbone), resolve_layer(backbone, "stages.2"), rise_masks=32)
    x = random_images(2)
    for method in (*CAM_METHODS, "saliency", "rise"):
        assert_maps(attribution_maps(method, explained, x, np.array([0, 1])), 2, 28)
