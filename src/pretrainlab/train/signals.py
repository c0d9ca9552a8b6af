"""Ctrl-C and SIGTERM during training: finish the step, save a checkpoint, stop (continue with --resume)."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def install_stop_handlers(request_stop: Callable[[], None]) -> dict[int, Any]:
    """SIGINT and SIGTERM call `request_stop` instead of killing the process; returns the previous handlers."""

    def handle(signum: int, _frame: Any) -> None:
        log.warning("signal %d: stopping after this step and saving a checkpoint", signum)
        request_stop()

    previous = {}
    with contextlib.suppress(ValueError):  # signals can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handle)
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
