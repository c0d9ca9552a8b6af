"""How the method's weights are spread over processes: `ddp` (replicated) or `fsdp` (sharded), and checkpoints.

- ddp: every process holds all weights; `DistributedDataParallel` averages gradients. Checkpoints are one
  `checkpoints/last.pt` written by rank 0.
- fsdp: PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`): each repeated block of every backbone in
  the method (ViT blocks, ResNet stages' blocks, ...; the student's and its EMA or frozen teacher's) is one
  unit whose weights, gradients and optimiser state are split over the processes and gathered only while
  the unit runs; the rest of the method (stems, heads, decoders) forms the root unit. Checkpoints are
  sharded with torch.distributed.checkpoint: every rank writes its own part into
  `checkpoints/sharded-stepN-ID/`, and `last.pt` (rank 0, atomic) names the complete one, so a crash during
  a save leaves the previous checkpoint in force. Exports gather the full backbone to rank 0.
With one process both strategies train the plain module.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.distributed import is_distributed, rank
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods.base import Method
from pretrainlab.train.checkpoint import load_checkpoint, save_checkpoint
from pretrainlab.train.sync_batchnorm import convert_sync_batchnorm

STRATEGIES = ("ddp", "fsdp")
BLOCK_CONTAINERS = ("blocks", "stages", "layers", "layer1", "layer2", "layer3", "layer4")


class DataParallel:
    """`ddp`: replicated weights, averaged gradients."""

    name = "ddp"

    def __init__(self, method: Method, sync_batchnorm: bool) -> None:
        self.method = method
        if sync_batchnorm and is_distributed():
            convert_sync_batchnorm(method)
        self.model: nn.Module = method
        if is_distributed():  # transformer methods leave parts unused (cls token, heads, decoder of unmasked paths)
            self.model = nn.parallel.DistributedDataParallel(method, find_unused_parameters=has_tokens(method))

    def no_sync(self) -> contextlib.AbstractContextManager:
        """Skips the gradient all-reduce (all micro-batches of an accumulated step but the last)."""
        return self.model.no_sync() if is_distributed() else contextlib.nullcontext()

    def save(self, run_dir: Path, optimizer: torch.optim.Optimizer, extra: dict[str, Any]) -> None:
        if rank() == 0:
            save_checkpoint(run_dir, {"method": self.method.state_dict(), "optimizer": optimizer.state_dict(),
                                      **extra})

    def load(self, run_dir: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        state = load_checkpoint(run_dir)
        if "sharded" in state:
            raise PretrainlabError(f"--resume: {run_dir} holds a sharded (fsdp) checkpoint; resume with --strategy "
                                   "fsdp")
        self.method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        return state

    def full_state(self, prefix: str = "") -> dict[str, torch.Tensor] | None:
        """The method's weights under `prefix` (keys without it), on rank 0; None elsewhere."""
        return _under(self.method.state_dict(), prefix) if rank() == 0 else None

    def full_backbone(self, device: torch.device) -> nn.Module | None:
        """The backbone with all its weights on rank 0 (for the online kNN monitor); None elsewhere."""
        return self.method.backbone if rank() == 0 else None


class FullySharded(DataParallel):
    """`fsdp`: FSDP2 units over the backbone's blocks and the method's root; sharded checkpoints."""

    name = "fsdp"

    def __init__(self, method: Method, sync_batchnorm: bool) -> None:
        from torch.distributed.fsdp import fully_shard

        self.method = method
        if sync_batchnorm and is_distributed():
            convert_sync_batchnorm(method)
        if is_distributed():
            for block in sharded_blocks(method):
                fully_shard(block)
            fully_shard(method)
        self.model = method

    def no_sync(self) -> contextlib.AbstractContextManager:
        return _gradient_sync_off(self.method) if is_distributed() else contextlib.nullcontext()

    def save(self, run_dir: Path, optimizer: torch.optim.Optimizer, extra: dict[str, Any]) -> None:
        if not is_distributed():
            return super().save(run_dir, optimizer, extra)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        names = [f"sharded-step{extra['step']:09d}-{time.time_ns()}"]
        dist.broadcast_object_list(names)  # rank 0's name for every rank
        folder = Path(run_dir) / "checkpoints" / names[0]
        model_state, optimizer_state = get_state_dict(self.method, optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder))
        dist.barrier()  # every shard is on disk before last.pt names the folder
        if rank() == 0:
            # "method" and "optimizer" are empty: their state is in the sharded folder that "sharded" names
            save_checkpoint(run_dir, {**extra, "method": {}, "optimizer": {}, "strategy": "fsdp",
                                      "sharded": names[0]})
            for old in folder.parent.glob("sharded-step*"):
                if old.name != names[0]:
                    shutil.rmtree(old, ignore_errors=True)
        dist.barrier()

    def load(self, run_dir: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if not is_distributed():
            return super().load(run_dir, optimizer)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        extra = load_checkpoint(run_dir)
        if "sharded" not in extra:
            raise PretrainlabError(f"--resume: {run_dir} holds a ddp checkpoint; resume with --strategy ddp")
        model_state, optimizer_state = get_state_dict(self.method, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=str(Path(run_dir) / "checkpoints" / extra["sharded"]))
        set_state_dict(self.method, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        return extra

    def full_state(self, prefix: str = "") -> dict[str, torch.Tensor] | None:
        """Gathers the full weights to rank 0 (a collective: every rank calls it)."""
        if not is_distributed():
            return super().full_state(prefix)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.method, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return _under(state, prefix) if rank() == 0 else None

    def full_backbone(self, device: torch.device) -> nn.Module | None:
        """An unsharded copy of the backbone on rank 0, rebuilt from its name and gathered weights."""
        if not is_distributed():
            return self.method.backbone
        from pretrainlab.backbones import create_backbone

        state = self.full_state("backbone.model.")
        if rank() != 0:
            return None
        backbone = self.method.backbone
        kwargs = {k: v for k, v in backbone.create_kwargs.items() if k not in ("img_size", "in_chans", "num_classes")}
        copy = create_backbone(backbone.name, backbone.create_kwargs.get("img_size", 224),
                               backbone.create_kwargs.get("in_chans", 3), check=False, **kwargs)
        copy.model.load_state_dict(state)
        return copy.to(device)


def _under(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `state` whose keys start with `prefix`, keyed without it."""
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


@contextlib.contextmanager
def _gradient_sync_off(module: nn.Module) -> Iterator[None]:
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def sharded_blocks(method: Method) -> list[nn.Module]:
    """The repeated blocks of every backbone in the method (its own, EMA teachers', frozen teachers'), children
    of lists named blocks/stages/layers; deepest first, since nested FSDP units must be made inside-out."""
    blocks: dict[int, nn.Module] = {}  # by identity: two Backbone wrappers may share one model (matryoshka)
    for backbone in (module for module in method.modules() if isinstance(module, Backbone)):
        for name, module in backbone.named_modules():
            if name.rpartition(".")[2] in BLOCK_CONTAINERS and isinstance(module, nn.Sequential | nn.ModuleList):
                blocks.update({id(c): c for c in module.children() if any(True for _ in c.parameters())})
    return list(blocks.values())[::-1]


def has_tokens(method: Method) -> bool:
    return any(isinstance(m, Backbone) and m.has_tokens for m in method.modules())


def check_strategy(name: str, method: Method, precision: str) -> None:
    """Bad combinations fail before any work, with one line."""
    if name not in STRATEGIES:
        raise PretrainlabError(f"unknown strategy '{name}'; valid strategies: {', '.join(STRATEGIES)}")
    if name != "fsdp":
        return
    reason = getattr(method, "fsdp_unsupported", "")
    if reason:
        raise PretrainlabError(f"--strategy fsdp cannot shard method '{method.name}': {reason}; use --strategy ddp")
    if precision == "fp16":
        raise PretrainlabError("--strategy fsdp trains in fp32 or bf16 (fp16's gradient scaler does not see sharded "
                               "gradients); use --precision bf16")


def make_strategy(name: str, method: Method, sync_batchnorm: bool, precision: str) -> DataParallel:
    check_strategy(name, method, precision)
    return FullySharded(method, sync_batchnorm) if name == "fsdp" else DataParallel(method, sync_batchnorm)
