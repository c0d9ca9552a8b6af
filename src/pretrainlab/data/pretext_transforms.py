"""Batched transforms whose parameters are the labels of a pretext task: rotations and jigsaw permutations.

- Rotation prediction: Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by Predicting Image
  Rotations", arXiv 1803.07728.
- Jigsaw puzzles: Noroozi, Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
  Puzzles", arXiv 1603.09246. The permutation set is chosen greedily for maximal average Hamming distance
  (their Algorithm 1), so the classes are far apart and the task cannot be solved from a few tiles.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch

from pretrainlab.errors import PretrainlabError

# Enumerate every permutation up to this many (9! = 362,880 for a 3x3 grid); sample a pool above it.
ENUMERATION_LIMIT = 400_000
SAMPLED_POOL = 50_000


def rotate_each(images: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Rotates image b by quarter_turns[b] * 90 degrees counter-clockwise: (B, C, S, S), (B,) in 0..3."""
    rotated = torch.stack([torch.rot90(images, turns, dims=(2, 3)) for turns in range(4)])  # (4, B, C, S, S)
    return rotated[quarter_turns, torch.arange(len(images), device=images.device)]


def candidate_permutations(num_tiles: int, generator: torch.Generator) -> torch.Tensor:
    """Every permutation of num_tiles when there are few enough, else a random pool: (P, num_tiles) int8."""
    total = math.factorial(num_tiles)
    if total <= ENUMERATION_LIMIT:
        flat = itertools.chain.from_iterable(itertools.permutations(range(num_tiles)))
        return torch.from_numpy(np.fromiter(flat, dtype=np.int8, count=total * num_tiles)).view(total, num_tiles)
    scores = torch.rand(SAMPLED_POOL, num_tiles, generator=generator)
    return scores.argsort(dim=1).to(torch.int8)


@functools.lru_cache(maxsize=8)  # pure and deterministic; a 3x3 grid scans 362,880 candidates per pick
def hamming_permutations(num_tiles: int, count: int, seed: int = 0) -> torch.Tensor:
    """`count` permutations of `num_tiles` tiles chosen for maximal average Hamming distance: (count, num_tiles).

    Noroozi and Favaro's Algorithm 1: start from a random permutation, then repeatedly add the candidate whose
    summed Hamming distance to the permutations already chosen is largest (first one on ties). Deterministic
    for a given seed, so every process and every resumed run uses the same classes.
    """
    if num_tiles < 2:
        raise PretrainlabError(f"a jigsaw puzzle needs at least 2 tiles, got {num_tiles}")
    available = math.factorial(num_tiles)
    if not 2 <= count <= min(available, SAMPLED_POOL):
        raise PretrainlabError(
            f"num_permutations must be in [2, {min(available, SAMPLED_POOL)}] for {num_tiles} tiles, got {count}"
        )
    generator = torch.Generator().manual_seed(seed)
    candidates = candidate_permutations(num_tiles, generator)  # (P, T)
    chosen = [int(torch.randint(len(candidates), (1,), generator=generator))]
    summed_distance = torch.zeros(len(candidates), dtype=torch.int32)  # (P,) Hamming distance to the chosen set
    taken = torch.zeros(len(candidates), dtype=torch.bool)
    for _ in range(count - 1):
        latest = chosen[-1]
        taken[latest] = True
        summed_distance += (candidates != candidates[latest]).sum(dim=1, dtype=torch.int32)
        scores = summed_distance.masked_fill(taken, -1)
        chosen.append(int(scores.argmax()))
    return candidates[chosen].long()


def shuffle_tiles(images: torch.Tensor, grid: int, permutations: torch.Tensor) -> torch.Tensor:
    """Cuts each image into grid x grid tiles and reorders them: output tile t is input tile permutations[b, t].

    Args:
        images: (B, C, S, S) with S divisible by grid.
        grid: tiles per side; tiles are numbered row-major.
        permutations: (B, grid * grid) long, one permutation per image.
    """
    batch, channels, size, _ = images.shape
    if size % grid:
        raise ValueError(f"image size {size} is not divisible by the jigsaw grid {grid}")
    tile = size // grid
    tiles = images.unfold(2, tile, tile).unfold(3, tile, tile)  # (B, C, grid, grid, tile, tile)
    tiles = tiles.reshape(batch, channels, grid * grid, tile, tile)
    index = permutations.to(images.device).view(batch, 1, grid * grid, 1, 1).expand(-1, channels, -1, tile, tile)
    shuffled = tiles.gather(2, index).view(batch, channels, grid, grid, tile, tile)
    return shuffled.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, size, size)
