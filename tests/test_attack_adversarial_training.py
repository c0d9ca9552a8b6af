"""Adversarial fine-tuning (PGD, TRADES): the losses, and the export as a run folder every layer loads."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from attack_data import digit_pixels, probed_tinycnn
from safetensors import safe_open
from safetensors.torch import load_file

from pretrainlab.attack.defences.adversarial_training import AdversarialTraining, adversarial_loss
from pretrainlab.attack.model import AttackedModel
from pretrainlab.cli import main
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import load_target
from pretrainlab.store import ResultsStore


def normalised_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    _, subject = probed_tinycnn()
    model: AttackedModel = subject.model
    images, labels = digit_pixels()
    inputs = (images[:16] - model.mean) / model.std
    return model.classifier, inputs, labels[:16], model.mean.flatten(), model.std.flatten()


def test_trades_without_its_robustness_term_is_cross_entropy_and_pgd_raises_the_loss() -> None:
    classifier, inputs, labels, mean, std = normalised_batch()
    indices = torch.arange(len(labels))
    with torch.no_grad():
        clean = F.cross_entropy(classifier.eval()(inputs), labels)
    trades = adversarial_loss(AdversarialTraining("trades", eps=8 / 255, steps=2, beta=0.0), labels, mean, std)
    assert float(trades(classifier, inputs, indices).detach()) == pytest.approx(float(clean), rel=1e-5)
    torch.manual_seed(0)
    pgd = adversarial_loss(AdversarialTraining("pgd", eps=8 / 255, steps=3), labels, mean, std)
    assert float(pgd(classifier, inputs, indices).detach()) > float(clean) + 0.1
    assert not classifier.training  # the inner attack restored the mode it found


@pytest.mark.parametrize("values", [{"method": "fgsm"}, {"eps": 0.0}, {"steps": 0}])
def test_bad_adversarial_training_settings_are_refused(values: dict) -> None:
    with pytest.raises(PretrainlabError):
        AdversarialTraining(**values)


def test_adversarial_finetuning_exports_a_run_folder_that_timm_eval_and_attack_load(tmp_path, capsys) -> None:
    out, store = tmp_path / "robust-run", tmp_path / "store.db"
    code = main(["attack", "timm:tinycnn", "--data", "builtin", "--max-train", "100", "--max-test", "20",
                 "--defence", "adv_finetune", "--attack", "pgd", "--eps", "8/255", "--option", "steps=2",
                 "--option", "adv_method=trades", "--option", "adv_steps=1", "--option", "epochs=1",
                 "--option", "min_steps=3", "--option", f"adv_out={out}", "--store", str(store), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert {"backbone.safetensors", "classifier.safetensors", "config.yaml", "metrics.jsonl"} <= \
        {path.name for path in out.iterdir()}
    with safe_open(str(out / "backbone.safetensors"), framework="pt") as handle:  # timm alone rebuilds it
        meta = handle.metadata()
    model = timm.create_model(meta["timm_name"], **json.loads(meta["create_kwargs"]))
    model.load_state_dict(load_file(str(out / "backbone.safetensors")))
    target = load_target(str(out), 0, 0)
    assert target.run_dir == out and target.img_size == 28 and target.mean is not None
    rows = ResultsStore(store).evaluations()
    assert {(row.protocol, row.metric) for row in rows} == {
        (protocol, metric) for protocol in ("adversarial_own_head", "adversarial")
        for metric in ("top1@clean", "pgd_linf@8/255")}
    assert all(row.run_path == str(out.resolve()) for row in rows)
    assert (out / "attack" / "adversarial_own_head_pgd_linf.png").is_file()
    capsys.readouterr()
    code = main(["attack", str(out), "--data", "builtin", "--max-train", "100", "--max-test", "20", "--head", "own",
                 "--eps", "8/255", "--option", "steps=1", "--no-store", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "adversarial_own_head" in printed
    # the run page is refreshed and shows the attack's figures
    assert f"report: {out / 'report.html'}" in printed and "adversarial_own_head_pgd_linf" in (
        out / "report.html").read_text()


def test_own_head_needs_a_run_written_by_adversarial_finetuning(capsys) -> None:
    code = main(["attack", "timm:tinycnn", "--data", "builtin", "--head", "own", "--no-store", "--max-train", "50"])
    assert code == 2 and "--head own needs a run folder" in capsys.readouterr().err
