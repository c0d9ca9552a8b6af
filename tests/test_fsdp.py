"""`--strategy fsdp` (FSDP2) on 2 gloo processes equals `ddp` and one process; sharded checkpoints resume exactly.

Views are made deterministic (whole image, no flip, no colour changes) and batch norm is synchronised, so a
2-process step on a global batch is the same computation as a 1-process step on it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_utils import run_distributed

from pretrainlab.config import build_config
from pretrainlab.distributed import mean_over_ranks
from pretrainlab.errors import PretrainlabError
from pretrainlab.train.config import RunConfig, TrainConfig

IDENTITY_VIEWS = {"crop_min_scale": 1.0, "flip_p": 0.0, "jitter_strength": 0.0, "grayscale_p": 0.0}
STEPS = 3


def _config(strategy: str, method: str = "simclr") -> RunConfig:
    options = {"hidden_dim": 16, "projection_dim": 8, "views": IDENTITY_VIEWS}
    train = TrainConfig(epochs=1, batch_size=16, lr=0.5, warmup_epochs=0, strategy=strategy, sync_batchnorm=True,
                        checkpoint_every=0, log_every=1, channels_last=False)
    return RunConfig(method=method, backbone="tinycnn", method_options=options, train=train)


def _images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (STEPS * 16, 12, 12, 3), dtype=np.uint8)


def _trainer(config: RunConfig, run_dir: Path):  # noqa: ANN202
    from pretrainlab.data.source import ImageSet
    from pretrainlab.methods import MethodContext
    from pretrainlab.pipeline import build_method
    from pretrainlab.train.loop import Trainer

    context = MethodContext(12, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    method, _ = build_method(config, context)
    return Trainer(method, ImageSet(_images()), config.train, run_dir, torch.device("cpu"), show_progress=False)


def _steps(trainer, first: int, last: int) -> list[float]:  # noqa: ANN001
    losses = []
    for step, images, labels, extras in trainer.feed.batches(first, last, torch.device("cpu")):
        scalars = trainer.train_step(step, images, labels, extras)
        losses.append(float(mean_over_ranks(scalars, torch.device("cpu"))["loss"]))
    return losses


def _run(rank: int, world_size: int, run_dir: str) -> dict:
    """DDP for 3 steps; FSDP for 3 steps with a sharded checkpoint after 2; FSDP resumed from it for step 3."""
    results = {}
    for strategy in ("ddp", "fsdp"):
        trainer = _trainer(_config(strategy), Path(run_dir) / strategy)
        losses = _steps(trainer, 0, 2)
        trainer.checkpoint(2)
        losses += _steps(trainer, 2, STEPS)
        results[strategy] = {"losses": losses, "backbone": trainer.strategy.full_state("backbone.model."),
                             "method": trainer.strategy.full_state()}
        weight = trainer.method.backbone.model.stages[1][0].weight  # a conv of the second stage: (64, 32, 3, 3)
        results[strategy]["local_rows"] = weight.to_local().shape[0] if hasattr(weight, "to_local") else len(weight)
    resumed = _trainer(_config("fsdp"), Path(run_dir) / "fsdp")
    assert resumed.restore() == 2
    results["resumed"] = {"losses": _steps(resumed, 2, STEPS), "method": resumed.strategy.full_state()}
    if rank == 0:
        from pretrainlab.backbones import load_backbone, save_backbone

        save_backbone(resumed.method.backbone, Path(run_dir) / "backbone.safetensors",
                      resumed.strategy.full_state("backbone.model."))
        results["exported"] = load_backbone(Path(run_dir) / "backbone.safetensors").model.state_dict()
        results["sharded_files"] = sorted(p.name for p in (Path(run_dir) / "fsdp" / "checkpoints").iterdir())
    else:
        resumed.strategy.full_state("backbone.model.")
    return results


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), rtol=1e-4, atol=2e-5, msg=name)


def test_fsdp_equals_ddp_and_one_process_and_resumes_from_sharded_checkpoints() -> None:
    with tempfile.TemporaryDirectory() as run_dir:
        results = run_distributed(_run, 2, run_dir)[0]
        with tempfile.TemporaryDirectory() as single_dir:
            single = _trainer(_config("ddp"), Path(single_dir))
            single_losses = _steps(single, 0, STEPS)
            single_state = {k: v.detach() for k, v in single.method.state_dict().items()}
    ddp, fsdp, resumed = results["ddp"], results["fsdp"], results["resumed"]
    np.testing.assert_allclose(ddp["losses"], single_losses, rtol=1e-5)  # global batch norm over 2 processes
    np.testing.assert_allclose(fsdp["losses"], ddp["losses"], rtol=1e-5)
    assert len(set(np.round(single_losses, 4))) == STEPS, "the weights move: every step has its own loss"
    _assert_same(fsdp["method"], ddp["method"])  # weights, momentum-updated, and batch norm statistics
    _assert_same(ddp["method"], single_state)
    np.testing.assert_allclose(resumed["losses"], fsdp["losses"][2:], rtol=1e-6)
    _assert_same(resumed["method"], fsdp["method"])
    _assert_same(results["exported"], fsdp["backbone"])  # one backbone.safetensors, loadable by name
    assert ddp["local_rows"] == 64 and fsdp["local_rows"] == 32, "each process holds half of every sharded weight"
    assert "last.pt" in results["sharded_files"] and any(n.startswith("sharded-step") for n in results["sharded_files"])


def test_fsdp_refuses_unshardable_methods_and_fp16() -> None:
    """Every registered method shards (2-process FSDP equals DDP for all of them, measured: docs/scale.md); a
    method that cannot names its reason in `fsdp_unsupported`, and `--strategy fsdp` refuses it in one line."""
    from pretrainlab.methods import METHODS
    from pretrainlab.train.strategy import check_strategy

    class FrozenExternalTeacher:
        name = "dummy"
        fsdp_unsupported = "its teacher runs outside the method's forward"

    with pytest.raises(PretrainlabError, match="cannot shard method 'dummy': its teacher runs outside"):
        check_strategy("fsdp", FrozenExternalTeacher, "fp32")
    check_strategy("ddp", FrozenExternalTeacher, "fp32")
    for name in METHODS.names():
        check_strategy("fsdp", METHODS.get(name), "fp32")
    with pytest.raises(PretrainlabError, match="bf16"):
        check_strategy("fsdp", METHODS.get("simclr"), "fp16")
    with pytest.raises(PretrainlabError, match="valid strategies"):
        build_config(TrainConfig, {"strategy": "zero3"})
