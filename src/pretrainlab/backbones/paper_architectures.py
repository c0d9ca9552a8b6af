"""The papers' architectures, registered in timm's own registry when this module is imported.

One file per architecture, as timm has them; each registers a `test_*` model of a few thousand parameters
(for the registry-driven tests), small and CIFAR-sized variants for 32 px images, and the paper's smallest
full-size model. `pretrainlab.backbones` imports this module, so `timm.create_model(NAME)` works after
`import pretrainlab.backbones`.
"""

from __future__ import annotations

import timm
from timm.models import model_entrypoint

from pretrainlab.backbones import (  # noqa: F401  (importing registers the models)
    cbnet,
    complex_cnn,
    convit_small,
    ibn_resnet,
    illama,
    moat,
    plain_nets,
    raftmlp,
    scatnet,
    slab,
)

ARCHITECTURE_MODULES = tuple(module.__name__ for module in (
    slab, moat, illama, raftmlp, ibn_resnet, complex_cnn, cbnet, scatnet, convit_small, plain_nets))


def paper_backbones() -> list[str]:
    """Every model name the architecture files register (test models included)."""
    return sorted(name for name in timm.list_models() if model_entrypoint(name).__module__ in ARCHITECTURE_MODULES)


def test_backbones() -> list[str]:
    """The tiny `test_*` model of every architecture, for registry-driven tests."""
    return [name for name in paper_backbones() if name.startswith("test_")]
