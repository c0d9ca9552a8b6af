"""Every registered method, two training steps on 2 gloo CPU processes under --strategy ddp and fsdp, compared.

    python -m bench.fsdp_vs_ddp_methods [NAME ...]

Each method is built as the registry test builds it (tinycnn, or vit_nano_patch4 for token methods, 32 px,
its `example_options`), trains 2 steps on a global batch of 16 random images under each strategy, and prints
the global-batch losses of both and the largest difference of the exported backbone weights. A method
whose FSDP run fails or differs would need `fsdp_unsupported` (methods/base.py). Not a speed benchmark.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _run_method(name: str, strategy: str, run_dir: Path) -> tuple[list[float], dict | None]:
    from test_methods_registry import tiny_method

    from pretrainlab.data.pairs import PARTNERS
    from pretrainlab.data.source import ImageSet
    from pretrainlab.distributed import mean_over_ranks
    from pretrainlab.train.config import TrainConfig
    from pretrainlab.train.loop import Trainer

    images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    extras = {PARTNERS: images[::-1].copy()} if name == "croco" else {}
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, batch_size=16, lr=0.1, warmup_epochs=0, strategy=strategy, channels_last=False)
    trainer = Trainer(tiny_method(name), ImageSet(images, np.arange(32) % 10, extras), config, run_dir,
                      torch.device("cpu"), show_progress=False)
    losses = []
    for step, batch, labels, batch_extras in trainer.feed.batches(0, 2, torch.device("cpu")):
        scalars = trainer.train_step(step, batch, labels, batch_extras)
        losses.append(float(mean_over_ranks(scalars, torch.device("cpu"))["loss"]))
    trainer.checkpoint(2)
    return losses, trainer.strategy.full_state("backbone.model.")


def _worker(rank: int, names: list[str], port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=120))
    for name in names:
        row = {}
        for strategy in ("ddp", "fsdp"):
            try:
                row[strategy] = _run_method(name, strategy, Path(out_dir) / f"{name}-{strategy}")
            except Exception as error:  # noqa: BLE001  (reported per method)
                row[strategy] = (f"error: {error!r}"[:200], None)
            dist.barrier()
        if rank == 0:
            print(name, _compare(row), flush=True)
    dist.destroy_process_group()


def _compare(row: dict) -> str:
    (ddp_losses, ddp_state), (fsdp_losses, fsdp_state) = row["ddp"], row["fsdp"]
    if isinstance(ddp_losses, str) or isinstance(fsdp_losses, str):
        return f"ddp: {ddp_losses if isinstance(ddp_losses, str) else 'ok'}; fsdp: " \
               f"{fsdp_losses if isinstance(fsdp_losses, str) else 'ok'}"
    difference = max(float((ddp_state[k].float() - fsdp_state[k].float()).abs().max()) for k in ddp_state)
    same = np.allclose(ddp_losses, fsdp_losses, rtol=1e-5)
    return (f"losses ddp {np.round(ddp_losses, 5).tolist()} fsdp {np.round(fsdp_losses, 5).tolist()} "
            f"({'equal' if same else 'DIFFERENT'}); largest backbone weight difference {difference:.1e}")


def main() -> None:
    import tempfile

    from pretrainlab.methods import METHODS

    names = sys.argv[1:] or METHODS.names()
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        port = handle.getsockname()[1]
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(names, port, out_dir), nprocs=2)


if __name__ == "__main__":
    main()
