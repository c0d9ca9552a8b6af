"""Debiased minibatch CKA against a naive loop implementation of the unbiased HSIC, and its invariances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pretrainlab.explain.similarity import MinibatchCKA, minibatch_cka


def naive_unbiased_hsic(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. (2012), written with explicit sums over images i != j (n = len(x))."""
    n = len(x)
    k = [[float(x[i] @ x[j]) if i != j else 0.0 for j in range(n)] for i in range(n)]
    l_ = [[float(y[i] @ y[j]) if i != j else 0.0 for j in range(n)] for i in range(n)]
    trace = sum(k[i][j] * l_[j][i] for i, j in itertools.product(range(n), repeat=2))
    sum_k = sum(map(sum, k))
    sum_l = sum(map(sum, l_))
    row_k = [sum(row) for row in k]
    row_l = [sum(row) for row in l_]
    cross = sum(row_k[i] * row_l[i] for i in range(n))  # 1' K L 1
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 / (n - 2) * cross) / (n * (n - 3))


def naive_minibatch_cka(batches_x: list[np.ndarray], batches_y: list[np.ndarray]) -> float:
    xy = np.mean([naive_unbiased_hsic(x, y) for x, y in zip(batches_x, batches_y, strict=True)])
    xx = np.mean([naive_unbiased_hsic(x, x) for x in batches_x])
    yy = np.mean([naive_unbiased_hsic(y, y) for y in batches_y])
    return float(xy / np.sqrt(xx * yy))


def test_minibatch_cka_equals_the_naive_unbiased_hsic() -> None:
    generator = torch.Generator().manual_seed(0)
    layer_a = [torch.randn(9, 3, 2, 2, generator=generator) for _ in range(3)]  # 3 batches of 9 images
    layer_b = [x.flatten(1)[:, :5] * 2 + 0.3 * torch.randn(9, 5, generator=generator) for x in layer_a]
    layer_c = [torch.randn(9, 7, generator=generator) for _ in range(3)]
    value = minibatch_cka([[a, b] for a, b in zip(layer_a, layer_b, strict=True)],
                          [[b, c] for b, c in zip(layer_b, layer_c, strict=True)])
    flat = lambda batches: [x.reshape(len(x), -1).double().numpy() for x in batches]  # noqa: E731
    expected = [[naive_minibatch_cka(flat(rows), flat(cols)) for cols in (layer_b, layer_c)]
                for rows in (layer_a, layer_b)]
    np.testing.assert_allclose(value.numpy(), np.array(expected), atol=1e-5)
    assert value[1, 0] == pytest.approx(1.0, abs=1e-5)  # layer b against itself


def test_cka_is_invariant_to_rotation_and_scale() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 10, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(10, 10, generator=generator))
    accumulator = MinibatchCKA()
    for batch in x.split(16):
        accumulator.update([batch], [3.0 * batch @ rotation, torch.randn(16, 10, generator=generator)])
    value = accumulator.value()
    assert value[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert abs(float(value[0, 1])) < 0.3  # unrelated features: near 0 (the debiased estimate can be negative)


def test_cka_against_a_second_backbone_leaves_gradients_on(builtin_source, tmp_path) -> None:  # noqa: ANN001
    """Regression: two interleaved feature generators used to leave torch's grad mode off, so an analysis run after
    `cka --against` (visualize, cam) failed with 'does not require grad'."""
    from pretrainlab.explain import ExplainContext, ExplainSettings
    from pretrainlab.explain.registry import run_analysis
    from tests.explain_data import digits, tiny_target

    settings = ExplainSettings(images=2, probe_images=20, options={"cka_images": 16, "cka_batch": 8},
                               show_progress=False)
    context = ExplainContext(tiny_target("cnn"), digits(builtin_source), torch.device("cpu"), tmp_path, settings,
                             against=tiny_target("cnn"))
    output = run_analysis(context, "cka")
    assert torch.is_grad_enabled()
    values = {result.metric: result.value for result in output.results}
    assert values["pooled_vs_against"] == pytest.approx(1.0, abs=1e-4)  # the same seeded network on both sides
