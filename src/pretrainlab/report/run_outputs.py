"""What a finished pre-training leaves for people to look at: the reconstructions in TensorBoard, the network
view's feature maps (RUN/network.json) and RUN/report.html."""

from __future__ import annotations

from pathlib import Path

import torch

from pretrainlab.data import ImageSource, load_source
from pretrainlab.data.subsets import limit_source
from pretrainlab.eval.target import EvalTarget, load_run_target
from pretrainlab.report.network_snapshot import write_network_snapshot
from pretrainlab.report.run_page import write_run_report
from pretrainlab.train.config import RunConfig
from pretrainlab.train.run_folder import saved_run_config
from pretrainlab.train.tensorboard import TensorBoardLog


def finish_run_outputs(run_dir: Path, config: RunConfig, target: EvalTarget, source: ImageSource,
                       device: torch.device) -> Path:
    """After training (rank 0): reconstructions into TensorBoard, the network view's maps, then RUN/report.html."""
    reconstructions = Path(run_dir) / "reconstructions.png"
    if config.train.tensorboard and reconstructions.is_file():
        board = TensorBoardLog(run_dir)
        board.image("reconstructions", reconstructions, config.train.epochs)
        board.close()
    write_network_snapshot(run_dir, target, source, device)
    return write_run_report(run_dir)


def snapshot_run_network(run_dir: Path, device: torch.device) -> Path | None:
    """RUN/network.json for a finished run, from its exported backbone and its config's data (`report --network`)."""
    config = saved_run_config(Path(run_dir))
    source = limit_source(load_source(config.data, image_size=config.img_size), config.max_train)
    return write_network_snapshot(run_dir, load_run_target(Path(run_dir)), source, device)
