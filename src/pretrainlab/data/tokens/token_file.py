"""The token file (`pretrainlab tokenize ... --out tokens.npz`) and the `tokens:PATH` data kind.

An npz archive, read without pickle:
- `codes_train` (N, h, w) uint8 (codebook <= 256) or uint16, optional `y_train` (N,), `codes_test`, `y_test`,
  `classes` (names, str);
- `meta`: one JSON string: format, codebook size, grid, image size and channels, the VQ-VAE's configuration, the
  tokenizer id (a hash of the codebook), the source spec and its split note;
- `vq/NAME`: the VQ-VAE's tensors (decode codes to pixels with `Tokenizer.vq.decode`), `adapter/NAME`:
  TokenAdapt's conversion and inversion.

As a data source the grids travel as uint8 "images" (N, h, w, 1), or (N, h, w, 3) holding the high and low byte
of uint16 codes, so the cache, subsets, splits and loaders handle them unchanged. Their channel statistics are
mean 0 and std 1/255: the pipeline's normalisation then hands token backbones the code bytes as exact floats.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pretrainlab.data.npz import read_array
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.data.tokens.adapt import TokenAdapter
from pretrainlab.data.tokens.vq import VQVAE, VQConfig
from pretrainlab.errors import PretrainlabError

FORMAT = "pretrainlab-tokens-1"
BYTE = 1.0 / 255.0  # the std that turns to_float's x / 255 back into the byte value


def code_dtype(codebook_size: int) -> np.dtype:
    return np.dtype(np.uint8) if codebook_size <= 256 else np.dtype(np.uint16)


def tokenizer_id(codebook: torch.Tensor | np.ndarray) -> str:
    """A short hash of the codebook: two files share an id only if their codes mean the same vectors."""
    array = np.ascontiguousarray(np.asarray(codebook, dtype=np.float32))
    return hashlib.sha256(array.tobytes()).hexdigest()[:16]


def codes_as_images(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """(N, h, w) codes -> uint8 (N, h, w, 1), or (N, h, w, 3) = (high byte, low byte, 0) above 256 codes."""
    if codebook_size <= 256:
        return codes.astype(np.uint8)[..., None]
    codes = codes.astype(np.uint16)
    return np.stack([(codes >> 8).astype(np.uint8), (codes & 255).astype(np.uint8), np.zeros_like(codes, np.uint8)],
                    axis=-1)


def codes_from_bytes(x: torch.Tensor) -> torch.Tensor:
    """Code bytes (B, C, h, w), uint8 or floats holding whole numbers -> codes (B, h, w) int64 (inverse of
    `codes_as_images`, channels first)."""
    x = x.round().long() if x.is_floating_point() else x.long()
    return x[:, 0] if x.shape[1] == 1 else x[:, 0] * 256 + x[:, 1]


@dataclass
class Tokenizer:
    """The trained VQ-VAE and TokenAdapt modules of a token file, with the facts that identify them."""

    vq: VQVAE
    adapter: TokenAdapter
    meta: dict

    @property
    def codebook(self) -> torch.Tensor:
        return self.vq.codebook  # (K, D)

    @property
    def codebook_size(self) -> int:
        return int(self.meta["codebook_size"])

    @property
    def id(self) -> str:
        return str(self.meta["tokenizer_id"])

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"vq/{k}": v.detach().cpu().numpy() for k, v in self.vq.state_dict().items()}
        arrays.update({f"adapter/{k}": v.detach().cpu().numpy() for k, v in self.adapter.state_dict().items()})
        return arrays


@dataclass
class TokenSource(ImageSource):
    """An `ImageSource` whose images are code grids; `tokenizer` decodes and augments them."""

    tokenizer: Tokenizer | None = field(default=None, repr=False)

    def channel_stats(self, max_images: int = 10_000) -> tuple[list[float], list[float]]:
        return [0.0] * self.channels, [BYTE] * self.channels


def write_token_file(path: Path, tokenizer: Tokenizer, splits: dict[str, tuple[np.ndarray, np.ndarray | None]],
                     classes: list[str] | None) -> None:
    """Writes codes (N, h, w) and labels per split, the tokenizer's weights and `meta` (compressed npz)."""
    dtype = code_dtype(tokenizer.codebook_size)
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(tokenizer.meta))}
    for split, (codes, labels) in splits.items():
        arrays[f"codes_{split}"] = codes.astype(dtype)
        if labels is not None:
            arrays[f"y_{split}"] = labels.astype(np.int64)
    if classes is not None:
        arrays["classes"] = np.array([str(name) for name in classes])
    arrays.update(tokenizer.state_arrays())
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def _read(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return read_array(archive, key)
    except PretrainlabError as error:
        raise PretrainlabError(f"token file {path}: {error}") from None


def read_meta(archive: np.lib.npyio.NpzFile, path: Path) -> dict:
    if "meta" not in archive.files:
        raise PretrainlabError(f"{path} is not a token file (no 'meta'); write one with pretrainlab tokenize SPEC "
                               "--out FILE.npz")
    try:
        meta = json.loads(str(_read(archive, "meta", path)))
    except ValueError:
        raise PretrainlabError(f"token file {path}: 'meta' is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise PretrainlabError(f"{path}: unknown token file format {found!r}; "
                               f"expected {FORMAT} (pretrainlab tokenize)")
    return meta


def build_tokenizer(archive: np.lib.npyio.NpzFile, meta: dict, path: Path) -> Tokenizer:
    try:
        vq = VQVAE(VQConfig(**meta["vq"]))
        adapter = TokenAdapter(meta["vq"]["code_dim"], meta["codebook_size"], meta["adapter_width"])
        for prefix, module in (("vq/", vq), ("adapter/", adapter)):
            state = {k[len(prefix):]: torch.from_numpy(_read(archive, k, path)) for k in archive.files
                     if k.startswith(prefix)}
            module.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise PretrainlabError(f"token file {path}: the tokenizer's weights do not load ({str(error)[:120]})") from None
    if tokenizer_id(vq.codebook) != meta.get("tokenizer_id"):
        raise PretrainlabError(f"token file {path}: its codebook does not match the tokenizer id it records "
                               f"({meta.get('tokenizer_id')}); the file was altered, write it again")
    return Tokenizer(vq.eval(), adapter.eval(), meta)


def _split(archive: np.lib.npyio.NpzFile, split: str, meta: dict, path: Path) -> ImageSet | None:
    if f"codes_{split}" not in archive.files:
        return None
    codes = _read(archive, f"codes_{split}", path)
    size, grid = int(meta["codebook_size"]), tuple(meta["grid"])
    if codes.dtype != code_dtype(size) or codes.ndim != 3 or codes.shape[1:] != grid:
        raise PretrainlabError(f"token file {path}: codes_{split} is {codes.dtype} {codes.shape}; a {size}-code "
                               f"tokenizer with a {grid[0]}x{grid[1]} grid stores {code_dtype(size)} "
                               f"(N, {grid[0]}, {grid[1]})")
    if codes.size and int(codes.max()) >= size:
        raise PretrainlabError(f"token file {path}: codes_{split} holds code {int(codes.max())}, beyond the "
                               f"codebook's {size} codes")
    labels = _read(archive, f"y_{split}", path) if f"y_{split}" in archive.files else None
    return ImageSet(codes_as_images(codes, size), labels)


def load_tokens(argument: str, **_: object) -> TokenSource:
    """The `tokens:PATH` data kind: code grids as images, the labels, and the tokenizer."""
    path = Path(argument).expanduser()
    if not path.is_file():
        raise PretrainlabError(f"token file not found: {path} (write one with pretrainlab tokenize SPEC --out FILE)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise PretrainlabError(f"cannot read {path} as a token file (npz): {error}") from None
    with archive:
        meta = read_meta(archive, path)
        train = _split(archive, "train", meta, path)
        if train is None:
            raise PretrainlabError(f"token file {path} has no codes_train")
        test = _split(archive, "test", meta, path)
        classes = [str(c) for c in _read(archive, "classes", path)] if "classes" in archive.files else None
        tokenizer = build_tokenizer(archive, meta, path)
    return TokenSource(f"tokens:{path}", train, test, classes=classes, split_note=meta.get("split", "given"),
                       mirror_invariant=bool(meta.get("mirror_invariant", True)), tokenizer=tokenizer)
