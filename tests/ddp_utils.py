"""Runs a function in several gloo processes on the CPU, for distributed-equivalence tests."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pretrainlab.distributed import leave_process_group


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, function: Callable[..., Any], args: tuple, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = function(rank, world_size, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # no rank tears gloo down while another is still inside a collective
    finally:
        leave_process_group()  # after a failure, a peer already gone must not hide this rank's own error
    # A rank whose work is saved leaves without the interpreter's teardown: gloo's background threads can abort
    # there ("terminate called without an active exception", SIGABRT) after a run that succeeded, seen once in CI.
    os._exit(0)


def run_distributed(function: Callable[..., Any], world_size: int, *args: Any) -> list[Any]:
    """Calls function(rank, world_size, *args) in `world_size` processes; returns each rank's result.

    `function` must be importable (defined at module level) and return tensors or plain values.
    """
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(world_size, _free_port(), function, args, out_dir), nprocs=world_size, join=True)
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world_size)]
