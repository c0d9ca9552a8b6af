"""The gauntlet: protocol planning, seeds, features shared, records stored, guards, CLI one-line errors."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pretrainlab.backbones import create_backbone, save_backbone
from pretrainlab.cli import main
from pretrainlab.data import load_source
from pretrainlab.errors import PretrainlabError, UnknownNameError
from pretrainlab.eval import PROTOCOLS, EvalContext, EvalResult
from pretrainlab.eval.gauntlet import (
    GauntletPlan,
    mean_and_std,
    plan_protocols,
    run_gauntlet,
    state_fingerprint,
    summarise,
)
from pretrainlab.eval.protocols import NotApplicable
from pretrainlab.eval.target import load_target
from pretrainlab.pipeline import gauntlet
from pretrainlab.store import EVALUATIONS_LOG, ResultsStore, file_fingerprint, read_evaluations

SPEED_FAST = ["--option", "speed_batch_size=4", "--option", "speed_warmup=1", "--option", "speed_iterations=1"]


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory: pytest.TempPathFactory, builtin_source) -> dict[str, Path]:
    """300 training and 100 test digits of the builtin set, labelled and unlabeled."""
    folder = tmp_path_factory.mktemp("gauntlet-data")
    rng = np.random.default_rng(0)
    train = rng.choice(len(builtin_source.train), 300, replace=False)
    test = rng.choice(len(builtin_source.test), 100, replace=False)
    x_train, x_test = builtin_source.train.images[train][..., 0], builtin_source.test.images[test][..., 0]
    np.savez(folder / "labelled.npz", x_train=x_train, y_train=builtin_source.train.labels[train], x_test=x_test,
             y_test=builtin_source.test.labels[test])
    np.savez(folder / "unlabeled.npz", x_train=x_train)
    return {"labelled": folder / "labelled.npz", "unlabeled": folder / "unlabeled.npz"}


def small_context(path: Path) -> EvalContext:
    source = load_source(f"npz:{path}")
    torch.manual_seed(0)
    return EvalContext(load_target("timm:tinycnn", 28, 1), source, torch.device("cpu"))


def test_plan_skips_labelled_protocols_on_unlabeled_data_and_names_bad_requests(small_npz) -> None:
    source = load_source(f"npz:{small_npz['unlabeled']}")
    plan = plan_protocols(source)
    assert "speed" in plan.protocols and "knn" not in plan.protocols
    assert "needs labels" in plan.skipped["knn"] and "needs labels" in plan.skipped["linear"]
    with pytest.raises(PretrainlabError, match="protocol 'knn' needs labels.*drop it from --protocols"):
        plan_protocols(source, ["speed", "knn"])
    with pytest.raises(UnknownNameError, match="did you mean 'linear'"):
        plan_protocols(source, ["linaer"])
    assert plan_protocols(source, ["speed", "speed"]).protocols == ["speed"]


def test_each_seed_runs_separately_and_features_are_extracted_once(small_npz, monkeypatch) -> None:
    import pretrainlab.eval.linear as linear_module
    import pretrainlab.eval.protocols as protocols_module

    extractions, validation_seeds = [], []
    real_extract, real_split = protocols_module.extract_features, linear_module.stratified_indices

    def counting_extract(*args, **kwargs):
        extractions.append(len(args[1]))
        return real_extract(*args, **kwargs)

    def recording_split(labels, fraction, seed):
        validation_seeds.append(seed)
        return real_split(labels, fraction, seed)

    monkeypatch.setattr(protocols_module, "extract_features", counting_extract)
    monkeypatch.setattr(linear_module, "stratified_indices", recording_split)
    context = small_context(small_npz["labelled"])
    sunk, call_seconds = [], []
    outcome = run_gauntlet(context, GauntletPlan(["knn", "linear"]), [0, 1, 2],
                           lambda results, seed, seconds: (sunk.append((seed, [r.protocol for r in results])),
                                                           call_seconds.append(seconds)))
    assert sunk == [(0, ["knn"]), (1, ["knn"]), (2, ["knn"]), (0, ["linear"]), (1, ["linear"]), (2, ["linear"])]
    assert all(seconds > 0 for seconds in call_seconds)
    assert call_seconds[0] >= outcome.per_seed[0][1].seconds  # the call's wall time includes the protocol's own
    assert extractions == [300, 100]  # train and test once, shared by both protocols and all seeds
    assert validation_seeds == [0, 1, 2]  # the linear probe's seed draws its validation split
    knn = [result.value for seed, result in outcome.per_seed if result.protocol == "knn"]
    assert len(set(knn)) == 1  # kNN has no randomness
    summary = {result.protocol: result for result in outcome.summary()}
    assert summary["knn"].spread == 0.0 and summary["knn"].settings["deterministic"] is True
    linear = [result.value for seed, result in outcome.per_seed if result.protocol == "linear"]
    assert summary["linear"].value == pytest.approx(statistics.fmean(linear))
    assert summary["linear"].settings["seeds"] == [0, 1, 2] and summary["linear"].settings["values"] == linear


def test_mean_and_std_against_numpy() -> None:
    values = [71.5, 73.0, 70.25, 72.0]
    mean, std = mean_and_std(values)
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert mean_and_std([3.0]) == (3.0, None)
    results = [(s, EvalResult("p", "d", "m", v, 2.0 + s)) for s, v in enumerate(values)]
    [summary] = summarise(results)
    assert (summary.value, summary.spread, summary.seconds) == pytest.approx((mean, std, 3.5))


def fake_protocol(behaviour: str):
    def protocol(context: EvalContext) -> list[EvalResult]:
        if behaviour == "mutate":
            with torch.no_grad():
                next(context.target.backbone.parameters()).add_(1.0)
        if behaviour == "not-applicable":
            raise NotApplicable("this data has no masks")
        if behaviour == "crash":
            raise ValueError("a bug")
        return [EvalResult("fake", context.source.spec, "m", 1.0, 0.0)]

    protocol.applies_to = lambda source: None
    return protocol


def test_guards_mutation_skips_not_applicable_and_keeps_going(small_npz, monkeypatch) -> None:
    context = small_context(small_npz["labelled"])
    for name in ("mutate", "not-applicable", "crash", "fine"):
        monkeypatch.setitem(PROTOCOLS._entries, name, fake_protocol(name))
    before = state_fingerprint(context.target.backbone)
    with pytest.raises(RuntimeError, match="'mutate' changed the evaluated backbone"):
        run_gauntlet(context, GauntletPlan(["mutate"]), [0])
    assert state_fingerprint(context.target.backbone) != before
    outcome = run_gauntlet(context, GauntletPlan(["not-applicable", "fine"]), [0, 1])
    assert outcome.skipped == {"not-applicable": "this data has no masks"} and len(outcome.per_seed) == 2
    with pytest.raises(NotApplicable):
        run_gauntlet(context, GauntletPlan(["not-applicable"], explicit=True), [0])
    with pytest.raises(ValueError, match="a bug"):
        run_gauntlet(context, GauntletPlan(["crash", "fine"]), [0])
    outcome = run_gauntlet(context, GauntletPlan(["crash", "fine"]), [0], keep_going=True)
    assert outcome.failed == {"crash": "ValueError: a bug"} and len(outcome.per_seed) == 1


def test_cli_gauntlet_stores_every_seed_of_a_random_timm_backbone(small_npz, tmp_path, capsys) -> None:
    store_path = tmp_path / "results.db"
    arguments = ["gauntlet", "timm:tinycnn", "--data", f"npz:{small_npz['labelled']}", "--protocols", "knn,speed",
                 "--seeds", "2", "--store", str(store_path), "--device", "cpu", *SPEED_FAST]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "knn" in printed and "± 0" in printed and "gmacs" in printed
    rows = ResultsStore(store_path).evaluations()
    assert len(rows) == 2 * 1 + 2 * 6  # kNN: one metric; speed: six; two seeds each
    assert sorted({row.seed for row in rows}) == [0, 1] and len({row.session for row in rows}) == 1
    assert len(read_evaluations(ResultsStore(store_path).external_log)) == len(rows)
    torch.manual_seed(123)  # the global generator's state must not change the random baseline
    assert main(arguments[:4] + ["--protocols", "knn", "--seeds", "1", "--store", str(store_path)]) == 0
    assert main(["eval", *arguments[1:4], "--protocol", "knn", "--store", str(store_path)]) == 0
    rows = ResultsStore(store_path).evaluations()
    assert len(rows) == 2 + 12 + 1 + 1
    assert all(row.call_seconds is not None and row.call_seconds >= row.seconds for row in rows)
    fingerprints = {row.fingerprint for row in rows}
    assert len(fingerprints) == 1 and fingerprints.pop().startswith("random-init:")  # same init every time


def test_gauntlet_on_a_run_folder_logs_in_the_folder_and_refreshes_its_report(small_npz, tmp_path) -> None:
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    save_backbone(create_backbone("tinycnn", 28, 1), run / "backbone.safetensors")
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "simclr", "backbone": "tinycnn",
                                                     "resolved": {"img_size": 28}}))
    store = ResultsStore(tmp_path / "runs" / "pretrainlab.db")
    outcome = gauntlet(str(run), f"npz:{small_npz['labelled']}", ["knn"], seeds=2, store=store.path, device="cpu")
    assert len(outcome.per_seed) == 2
    logged = read_evaluations(run / EVALUATIONS_LOG)
    assert [row.uid for row in logged] == [row.uid for row in store.evaluations()]
    assert {row.fingerprint for row in logged} == {file_fingerprint(run / "backbone.safetensors")}
    assert {row.run_path for row in logged} == {str(run.resolve())}
    assert store.count("runs") == 1
    assert "knn" in (run / "report.html").read_text()


def test_cli_gauntlet_errors_are_one_line(small_npz, capsys) -> None:
    unlabeled = f"npz:{small_npz['unlabeled']}"
    cases = [(["gauntlet", "timm:tinycnn", "--data", unlabeled, "--protocols", "knn"], "needs labels"),
             (["gauntlet", "timm:tinycnn", "--data", unlabeled, "--protocols", "knm"], "did you mean 'knn'"),
             (["gauntlet", "timm:tinycnn", "--data", unlabeled, "--seeds", "0"], "--seeds must be at least 1")]
    for arguments, message in cases:
        assert main(arguments) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1, error


def test_limited_splits_are_class_balanced_fixed_and_named(small_npz) -> None:
    from pretrainlab.data.subsets import limit_source

    source = load_source(f"npz:{small_npz['labelled']}")
    limited = limit_source(source, max_train=100, max_test=50)
    train_counts = np.bincount(source.train.labels, minlength=10)
    expected = np.round(train_counts * 100 / 300).astype(int)  # the same share of every class
    assert np.array_equal(np.bincount(limited.train.labels, minlength=10), expected)
    assert limited.spec == f"npz:{small_npz['labelled']}[train:{expected.sum()},test:{len(limited.test)}]"
    again = limit_source(load_source(f"npz:{small_npz['labelled']}"), max_train=100, max_test=50)
    assert np.array_equal(again.train.images, limited.train.images)  # every backbone sees the same images
    assert limit_source(source) is source and limit_source(source, max_train=10_000) is source
    tiny = limit_source(source, max_train=3)  # the stratified split keeps one image of every class
    assert sorted(tiny.train.labels) == list(range(10)) and tiny.spec.endswith("[train:10]")
    unlabeled = limit_source(load_source(f"npz:{small_npz['unlabeled']}"), max_train=20)
    assert len(unlabeled.train) == 20 and unlabeled.spec.endswith("[train:20]")
