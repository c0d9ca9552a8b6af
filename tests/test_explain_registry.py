"""Registry-driven: every registered analysis runs on a tiny CNN and a tiny ViT (or says why it does not apply);
the command gives exit 2 and one line on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pretrainlab.backbones import save_backbone
from pretrainlab.cli import main
from pretrainlab.cli_explain import ANALYSIS_NAMES
from pretrainlab.errors import PretrainlabError
from pretrainlab.explain import ANALYSES
from pretrainlab.explain.registry import run_analysis, skip_reason
from tests.explain_data import canvases, make_context, tiny_target

TINY_OPTIONS = {
    "cam_methods": ["gradcam", "eigencam"], "attribution_methods": ["saliency", "rise"], "rise_masks": 16,
    "road_percentiles": [50], "insertion_steps": 4, "cka_images": 16, "cka_batch": 8, "attention_images": 2,
    "visualize_steps": 3, "visualize_channels": 2, "dissect_images": 12, "comet_epochs": 1, "comet_images": 24,
}


def test_cli_lists_every_registered_analysis() -> None:
    assert list(ANALYSIS_NAMES) == ANALYSES.names()


@pytest.fixture(scope="module", params=["cnn", "vit"])
def context(request, builtin_source, tmp_path_factory):  # noqa: ANN001, ANN201
    """One context per backbone kind, shared by the analyses (as one `pretrainlab explain` call shares it)."""
    size = 28 if request.param == "cnn" else 32  # the ViT at its own 32 px: 56 px canvases are resized
    source = canvases(builtin_source, count=40, objects_per_class=4)
    return make_context(tiny_target(request.param, size), source, tmp_path_factory.mktemp(request.param), images=2,
                        **TINY_OPTIONS)


@pytest.mark.parametrize("name", ANALYSES.names())
def test_every_analysis_runs_on_a_tiny_backbone(name: str, context) -> None:  # noqa: ANN001
    if skip_reason(name, context.backbone) is not None:
        with pytest.raises(PretrainlabError, match=name):
            run_analysis(context, name)
        return
    output = run_analysis(context, name)
    assert output.results and output.files
    assert all(path.exists() for path in output.files)
    assert any(path.suffix == ".png" for path in output.files) and any(path.suffix == ".npz" for path in output.files)
    for result in output.results:
        assert result.protocol == f"explain.{name}" and math.isfinite(result.value), result
    assert all(np.load(path, allow_pickle=False) is not None for path in output.files if path.suffix == ".npz")


@pytest.mark.parametrize("arguments, message", [
    (["timm:tinycnn", "--what", "nope"], "unknown analysis name 'nope'"),
    (["timm:tinycnn", "--what", "attention"], "needs a vision transformer"),
    (["timm:tinycnn", "--what", "cam", "--layer", "stages.9"], "has no layer 'stages.9'"),
    (["timm:tinycnn", "--what", "cam", "--option", "cam_method=[gradcam]"], "did you mean 'cam_methods'"),
    (["VIT_RUN", "--what", "cam", "--img-size", "28"], "cannot take 28x28"),
])
def test_bad_input_exits_2_with_one_line(arguments: list[str], message: str, capsys, tmp_path) -> None:
    (tmp_path / "vit").mkdir()  # a run folder holding a ViT made for 32 px images
    save_backbone(tiny_target("vit", 32).backbone, tmp_path / "vit" / "backbone.safetensors")
    arguments = [str(tmp_path / "vit") if argument == "VIT_RUN" else argument for argument in arguments]
    code = main(["explain", *arguments, "--images", "1", "--probe-images", "20", "--no-store", "--no-progress",
                 "--out", str(tmp_path)])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and error[0].startswith("error: ") and message in error[0], error


def test_explain_records_reach_the_store_and_compare_ranks_them(tmp_path) -> None:
    from pretrainlab.explain import ExplainSettings
    from pretrainlab.explain.session import explain_backbone
    from pretrainlab.report import compare_store, render
    from pretrainlab.store import ResultsStore

    store = tmp_path / "runs" / "pretrainlab.db"
    settings = ExplainSettings(images=1, show_progress=False)
    for spec in ("timm:tinycnn", "timm:resnet18_cifar"):
        outcome = explain_backbone(spec, "builtin", ["filters"], settings, store=store)
        assert outcome.out_dir == tmp_path / "runs" / spec.replace(":", "-") / "explain"
        assert (outcome.out_dir / "filters.png").exists()
    rows = ResultsStore(store).evaluations()
    assert {(row.protocol, row.metric) for row in rows} == {("explain.filters", "degenerate"),
                                                             ("explain.filters", "variance_entropy"),
                                                             ("explain.filters", "orthogonality")}
    table = render(compare_store(ResultsStore(store)), "markdown")
    assert "explain.filters" in table and "timm:resnet18_cifar" in table
