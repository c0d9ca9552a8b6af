"""Input-space attacks: torchattacks called through pretrainlab gives torchattacks' numbers; budgets, [0, 1],
eps=0, monotone robust accuracy; records and figures through the CLI; one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchattacks
from attack_data import CPU, digit_pixels, digits, probed_tinycnn

from pretrainlab.attack.input_space import AttackSettings, eps_label, parse_eps, perturbation_norm
from pretrainlab.attack.model import predict
from pretrainlab.attack.plan import make_plan
from pretrainlab.attack.robustness import attack_batches, robust_accuracy, within_budget
from pretrainlab.cli import main
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, evaluate
from pretrainlab.store import ResultsStore

FEW = AttackSettings(steps=5, square_queries=30, cw_steps=20)


def test_pgd_robust_accuracy_equals_torchattacks_called_directly() -> None:
    _, subject = probed_tinycnn()
    images, labels = digit_pixels()
    eps, seed = 2 / 255, 3
    ours = robust_accuracy(subject.model, images, labels, "pgd", [eps], "linf", AttackSettings(), seed=seed)
    torch.manual_seed(seed)
    direct = torchattacks.PGD(subject.model, eps=eps, alpha=2.5 * eps / 10, steps=10)(images, labels)
    direct_accuracy = float((predict(subject.model, direct) == labels).float().mean()) * 100
    assert ours.clean_accuracy > 40, "the probe should be well above chance for this test to mean anything"
    assert abs(ours.per_eps[0].robust_accuracy - direct_accuracy) <= 100 / len(images) + 1e-6


def test_eps_zero_is_clean_accuracy_and_robust_accuracy_never_rises_with_eps() -> None:
    _, subject = probed_tinycnn()
    images, labels = digit_pixels()
    clean = float((predict(subject.model, images) == labels).float().mean()) * 100
    for attack in ("fgsm", "pgd", "apgd"):
        outcome = robust_accuracy(subject.model, images, labels, attack, [0, 1 / 255, 2 / 255, 8 / 255], "linf", FEW)
        values = [result.robust_accuracy for result in outcome.per_eps]
        assert values[0] == pytest.approx(clean), attack
        assert all(later <= earlier for earlier, later in zip(values, values[1:], strict=False)), (attack, values)
        assert values[-1] < clean, f"{attack} at 8/255 should break some images"


@pytest.mark.parametrize("attack, norm, eps", [("pgd", "linf", 4 / 255), ("pgd", "l2", 0.5), ("apgd", "l2", 0.5),
                                               ("square", "linf", 8 / 255), ("fgsm", "linf", 8 / 255)])
def test_adversarial_images_stay_within_budget_and_in_the_unit_range(attack: str, norm: str, eps: float) -> None:
    _, subject = probed_tinycnn()
    images, labels = digit_pixels()
    adversarial = attack_batches(subject.model, attack, images[:20], labels[:20], eps, norm, FEW, 10, 0, 256)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert float(perturbation_norm(adversarial - images[:20], norm).max()) <= eps + 1e-6
    assert not torch.equal(adversarial, images[:20])


def test_minimum_norm_cw_counts_only_perturbations_that_fit_the_budget() -> None:
    _, subject = probed_tinycnn()
    images, labels = digit_pixels()
    found = attack_batches(subject.model, "cw", images[:20], labels[:20], 0.0, "l2", FEW, 10, 0, 256)
    for eps in (0.0, 0.5, 2.0):
        kept = within_budget(images[:20], found, eps, "l2")
        assert float(perturbation_norm(kept - images[:20], "l2").max()) <= eps + 1e-6
    outcome = robust_accuracy(subject.model, images, labels, "cw", [0, 0.5, 2.0], "l2", FEW)
    values = [result.robust_accuracy for result in outcome.per_eps]
    assert values[0] == pytest.approx(outcome.clean_accuracy) and values == sorted(values, reverse=True)


@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("0.5", 0.5), ("0", 0.0), (" 1 ", 1.0)])
def test_eps_parsing(text: str, value: float) -> None:
    assert parse_eps(text) == pytest.approx(value)


def test_l2_budgets_may_exceed_one_and_are_labelled_as_numbers() -> None:
    """An L2 norm over a whole image is not bounded by 1 (MNIST's L2 budgets are 1.5-2); L-inf budgets are."""
    assert parse_eps("2", "l2") == 2.0 and parse_eps("0.5", "l2") == 0.5
    for text, norm in (("2", "linf"), ("-0.1", "l2"), ("inf", "l2")):
        with pytest.raises(PretrainlabError):
            parse_eps(text, norm)
    assert eps_label(8 / 255) == "8/255" and eps_label(1.0, "l2") == "1" and eps_label(0.5, "l2") == "0.5"


def test_an_l2_plan_above_one_is_checked_only_against_the_attacks_it_runs() -> None:
    """The universal attack's default budget is the largest --eps (an L-inf bound): an L2 plan of PGD and CW with
    budgets above 1 must not fail on it, while asking for the universal attack with such a budget still does."""
    plan = make_plan(["pgd", "cw"], ["0.25", "2"], norm="l2")
    assert plan.eps == [0.25, 2.0]
    with pytest.raises(PretrainlabError, match="universal"):
        make_plan(["pgd", "universal"], ["0.25", "2"], norm="l2")


def test_the_adversarial_protocol_reports_clean_and_per_eps_records() -> None:
    target, _ = probed_tinycnn()
    context = EvalContext(target, digits(), CPU, {"max_test": 20, "steps": 2, "eps": ["2/255", "8/255"], "seed": 0})
    results = evaluate(context, "adversarial")
    assert [r.metric for r in results] == ["top1@clean", "pgd_linf@2/255", "pgd_linf@8/255"]
    assert results[0].value >= results[1].value >= results[2].value
    assert all(r.protocol == "adversarial" and r.settings["head"] == "linear" for r in results)
    assert results[1].seconds > 0 and results[1].settings["test_images_attacked"] == 20


def test_the_adversarial_protocol_declares_every_attack_setting_and_refuses_others() -> None:
    from dataclasses import fields

    from pretrainlab.eval.protocols import check_options
    from pretrainlab.eval.protocols.adversarial import ATTACK_SETTINGS_OPTIONS

    assert set(ATTACK_SETTINGS_OPTIONS) == {item.name for item in fields(AttackSettings)}
    check_options(["adversarial"], {"steps": 3, "eps": ["8/255"], "max_test": 10, "seed": 0})
    with pytest.raises(PretrainlabError, match="did you mean 'steps'"):
        check_options(["adversarial"], {"stepz": 3})


def test_cli_records_per_eps_results_in_the_store_and_draws_grids(tmp_path, capsys) -> None:
    store, figures = tmp_path / "store.db", tmp_path / "figures"
    code = main(["attack", "timm:tinycnn", "--data", "builtin", "--max-train", "200", "--max-test", "20",
                 "--attack", "fgsm,pgd", "--eps", "2/255,8/255", "--option", "steps=2", "--store", str(store),
                 "--figures", str(figures), "--json", "--no-progress"])
    assert code == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [row["metric"] for row in printed] == ["top1@clean", "fgsm_linf@2/255", "fgsm_linf@8/255",
                                                  "pgd_linf@2/255", "pgd_linf@8/255"]
    stored = ResultsStore(store).evaluations()
    assert {row.metric for row in stored} == {row["metric"] for row in printed}
    assert all(row.backbone == "timm:tinycnn" and row.protocol == "adversarial" for row in stored)
    assert sorted(path.name for path in figures.iterdir()) == ["adversarial_fgsm_linf.png", "adversarial_pgd_linf.png"]


@pytest.fixture()
def unlabeled_npz(tmp_path):
    path = tmp_path / "unlabeled.npz"
    np.savez(path, x_train=np.zeros((20, 8, 8), dtype=np.uint8))
    return path


@pytest.mark.parametrize("extra, message", [
    (["--eps", "2"], "outside [0, 1]"),
    (["--eps", "eight"], "not a number"),
    (["--attack", "pgdd"], "did you mean 'pgd'"),
    (["--norm", "l3"], "unknown norm"),
    (["--attack", "fgsm", "--norm", "l2"], "supports only linf"),
    (["--defence", "fusion"], "needs a second backbone"),
    (["--defence", "shield"], "unknown defence"),
    (["--head", "mlp"], "unknown head"),
    (["--option", "steps=0"], "at least 1"),
    (["--option", "stepz=20"], "did you mean 'steps'"),
    (["--option", "steps=1.5"], "steps must be a whole number"),
    (["--option", "adv_steps=many"], "adv_steps must be a whole number"),
    (["--option", "feature_pairs=1.5"], "feature_pairs must be a whole number"),
    (["--option", "universal_eps=2"], "outside [0, 1]"),
    (["--option", "fooling_threshold=1.5"], "0 < threshold < 1"),
    (["--option", "adv_method=fgsm"], "unknown adversarial training method"),
])
def test_bad_input_exits_2_with_one_line(extra: list[str], message: str, capsys) -> None:
    code = main(["attack", "timm:tinycnn", "--data", "builtin", "--no-store", *extra])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and error[0].startswith("error: ") and message in error[0], error


def test_unlabeled_data_is_refused_with_one_line(unlabeled_npz, capsys) -> None:
    code = main(["attack", "timm:tinycnn", "--data", f"npz:{unlabeled_npz}", "--no-store"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "needs labels" in error[0]


def test_settings_reject_a_bad_option() -> None:
    with pytest.raises(PretrainlabError, match="steps must be a whole number"):
        AttackSettings.from_options({"steps": "many"})
    with pytest.raises(PretrainlabError, match="step_factor must be a number"):
        AttackSettings.from_options({"step_factor": "big"})
    assert AttackSettings.from_options({"steps": "3", "step_factor": 2}) == AttackSettings(steps=3, step_factor=2.0)
