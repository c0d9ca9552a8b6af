"""Pretext tasks, one file each, registered by name.

Every module in this package is imported here, so a new method file registers itself by existing;
`parts/` holds what several methods share (momentum teachers, queues, frozen teachers, view presets).
"""

import importlib
import pkgutil

from pretrainlab.methods.base import METHODS, Batch, Method, MethodContext, ViewOptions, register_method

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Batch", "Method", "MethodContext", "ViewOptions", "register_method"]
