"""Reading tensors from files that came from outside: safetensors, or torch files of plain tensors, never pickle.

Every reader turns a damaged file (empty, truncated, garbage) or an unsafe one (pickled Python objects) into
one `PretrainlabError` line naming the file and what pretrainlab reads instead; torch's own message for a
refused pickle suggests retrying with `weights_only=False`, which would run the file's code, so it is never
passed on.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from pretrainlab.errors import PretrainlabError

SAFE_FORMATS = "a .safetensors file or a torch file of plain tensors (torch.save(model.state_dict()))"


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:120] if text else type(error).__name__


def load_torch_file(path: Path, what: str = "weights file") -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, with one-line errors for unsafe or damaged files."""
    path = Path(path)
    if not path.is_file():
        raise PretrainlabError(f"{what} not found: {path}")
    with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise PretrainlabError(
                f"{what} {path} is not a safe file: it holds pickled Python objects (or is no torch file at all), "
                f"which pretrainlab never unpickles; give {SAFE_FORMATS}") from None
        except (RuntimeError, EOFError, KeyError, ValueError, OSError, IndexError, AttributeError) as error:
            raise PretrainlabError(f"{what} {path} is damaged, truncated or not a torch file ({_short(error)}); "
                                   f"give {SAFE_FORMATS}") from None


def load_safetensors(path: Path, what: str = "weights file") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, with a one-line error for a damaged one."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise PretrainlabError(f"{what} {path} is not a readable safetensors file ({_short(error)}); it may be "
                               "truncated or damaged: export or download it again") from None


def safetensors_metadata(path: Path, what: str = "weights file") -> dict[str, str]:
    """The metadata header of a safetensors file ({} when it has none)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise PretrainlabError(f"{what} {path} is not a readable safetensors file ({_short(error)}); it may be "
                               "truncated or damaged: export or download it again") from None


def load_state_dict_file(path: Path, what: str = "weights file") -> Any:
    """A safetensors file or a torch file of tensors, by suffix."""
    path = Path(path)
    if not path.is_file():
        raise PretrainlabError(f"{what} not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path, what)
    return load_torch_file(path, what)
