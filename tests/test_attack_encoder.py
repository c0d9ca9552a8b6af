"""Feature-space targeted attack and fooling images: they do what their papers say on tiny models."""

from __future__ import annotations

import pytest
import torch
from attack_data import digit_pixels, probed_tinycnn, trained_tinycnn

from pretrainlab.attack.cppn import CPPN
from pretrainlab.attack.feature_space import LayerFeatures, feature_attack, resolve_layer, target_pairs
from pretrainlab.attack.fooling import FoolingSettings, evolve_cppn, evolve_direct, gradient_ascent
from pretrainlab.cli import main
from pretrainlab.errors import PretrainlabError


def test_feature_attack_moves_features_towards_the_target_within_budget() -> None:
    target, subject = probed_tinycnn()
    images, labels = digit_pixels()
    encoder = LayerFeatures(target.backbone, subject.model.mean.flatten(), subject.model.std.flatten())
    layer = resolve_layer("-1", encoder.layer_names(images))
    assert layer == "layer2"
    sources, targets = target_pairs(labels, 12, seed=0)
    assert bool((labels[sources] != labels[targets]).all())
    eps = 32 / 255  # a spatial map barely moves at 8/255 (+0.02 cosine on this random tinycnn)
    outcome = feature_attack(encoder, images[sources], images[targets], layer, eps, steps=10)
    delta = outcome.adversarial - images[sources]
    assert float(delta.abs().max()) <= eps + 1e-6 and outcome.adversarial.min() >= 0 and outcome.adversarial.max() <= 1
    assert float(outcome.after[layer].mean()) > float(outcome.before[layer].mean()) + 0.05
    with pytest.raises(PretrainlabError, match="unknown feature layer"):
        resolve_layer("layer9", encoder.layer_names(images))


def test_gradient_ascent_fools_a_tiny_trained_model_at_99_percent() -> None:
    _, subject = trained_tinycnn()
    settings = FoolingSettings(gradient_steps=60)
    result = gradient_ascent(subject.model, 10, (1, 28, 28), settings, torch.Generator().manual_seed(0))
    assert result.images.shape == (10, 1, 28, 28) and result.images.min() >= 0 and result.images.max() <= 1
    assert float(result.confidences.max()) >= 0.99
    assert int((result.confidences >= 0.99).sum()) >= 5, result.confidences


@pytest.mark.parametrize("evolve", [evolve_direct, evolve_cppn])
def test_map_elites_archive_only_improves(evolve) -> None:
    _, subject = trained_tinycnn()

    def run(generations: int) -> torch.Tensor:
        settings = FoolingSettings(generations=generations, population=32)
        return evolve(subject.model, 10, (1, 28, 28), settings, torch.Generator().manual_seed(0)).confidences

    early, later = run(2), run(8)
    assert bool((later >= early - 1e-6).all()) and float(later.sum()) > float(early.sum())


def test_cppn_draws_smooth_images_in_the_unit_range() -> None:
    network = CPPN(size=16, channels=3)
    images = network.render(network.random(4, torch.Generator().manual_seed(0)))
    assert images.shape == (4, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    neighbour_change = (images[..., 1:] - images[..., :-1]).abs().mean()
    shuffled = images.flatten(2)[..., torch.randperm(256)].view_as(images)
    assert neighbour_change < (shuffled[..., 1:] - shuffled[..., :-1]).abs().mean()  # regular, not noise


def test_cli_feature_and_fooling_records(tmp_path, capsys) -> None:
    code = main(["attack", "timm:tinycnn", "--data", "builtin", "--max-train", "100", "--max-test", "20",
                 "--attack", "feature,fooling", "--eps", "8/255", "--option", "feature_pairs=6",
                 "--option", "feature_steps=3", "--option", "fooling_generations=2", "--option",
                 "fooling_population=8", "--option", "fooling_gradient_steps=3", "--no-store", "--figures",
                 str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    for metric in ("target_class@8/255:layer2", "cosine@8/255:pooled", "confidence@gradient", "confidence@cppn",
                   "classes_reached@direct"):
        assert metric in out
    assert {path.name for path in tmp_path.iterdir()} == {"feature_layer2.png", "fooling.png"}


def test_unknown_fooling_search_is_refused_before_any_work(capsys) -> None:
    code = main(["attack", "timm:tinycnn", "--attack", "fooling", "--option", "fooling_methods=[gradient,dna]",
                 "--no-store"])
    assert code == 2 and "unknown fooling method 'dna'" in capsys.readouterr().err
