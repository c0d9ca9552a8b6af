"""PNG figures of the explain layer (matplotlib, Agg backend). Every figure carries a caption naming its backbone,
data, settings and seed (DESIGN.md: a figure names what it measured)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CAPTION_SIZE = 7


def _finish(figure: plt.Figure, path: Path, caption: str) -> Path:
    figure.text(0.01, 0.005, caption, fontsize=CAPTION_SIZE, ha="left", va="bottom", wrap=True)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def show_image(axis: plt.Axes, pixels: np.ndarray) -> None:
    """uint8 (H, W, C) with C 1 or 3."""
    axis.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=255)
    axis.set_xticks([])
    axis.set_yticks([])


def map_grid(path: Path, pixels: np.ndarray, maps: dict[str, np.ndarray], row_titles: Sequence[str],
             caption: str, rows: int = 6) -> Path:
    """Rows of images: the input, then each method's map (jet, alpha 0.5) over it.

    pixels (N, H, W, C) uint8, maps name -> (N, H, W) in [0, 1].
    """
    rows = min(rows, len(pixels))
    figure, axes = plt.subplots(rows, 1 + len(maps), figsize=(1.25 * (1 + len(maps)), 1.3 * rows + 0.5),
                                squeeze=False)
    for row in range(rows):
        show_image(axes[row, 0], pixels[row])
        axes[row, 0].set_ylabel(row_titles[row], fontsize=7)
        for column, (name, values) in enumerate(maps.items(), start=1):
            show_image(axes[row, column], pixels[row])
            axes[row, column].imshow(values[row], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if row == 0:
                axes[row, column].set_title(name, fontsize=7)
    axes[0, 0].set_title("input", fontsize=7)
    return _finish(figure, path, caption)


def heatmap(path: Path, matrix: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], title: str,
            caption: str, vmin: float = 0.0, vmax: float = 1.0, annotate: bool = True) -> Path:
    """One annotated heat map (e.g. CKA between layers)."""
    height, width = matrix.shape
    figure, axis = plt.subplots(figsize=(1.2 + 0.55 * width, 1.2 + 0.5 * height))
    image = axis.imshow(matrix, cmap="magma", vmin=vmin, vmax=vmax)
    axis.set_xticks(range(width), column_labels, rotation=60, ha="right", fontsize=7)
    axis.set_yticks(range(height), row_labels, fontsize=7)
    if annotate and height * width <= 400:
        for (i, j), value in np.ndenumerate(matrix):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                      color="white" if value < (vmin + vmax) / 2 else "black")
    axis.set_title(textwrap.fill(title, width=max(30, 9 * width)), fontsize=9)  # long run paths wrap
    figure.colorbar(image, ax=axis, fraction=0.046)
    return _finish(figure, path, caption)


def image_grid(path: Path, images: Sequence[np.ndarray], titles: Sequence[str], caption: str, columns: int = 8,
               cmap: str | None = None) -> Path:
    """Images (H, W, C) float in [0, 1] or uint8, or (H, W) with `cmap`, in a grid with a title each."""
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.35 * rows + 0.4), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, image, title in zip(axes.ravel(), images, titles, strict=False):
        picture = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        scale = {"vmin": 0.0, "vmax": 1.0} if np.issubdtype(picture.dtype, np.floating) else {}
        axis.imshow(picture, cmap=cmap or ("gray" if picture.ndim == 2 else None), **scale)
        axis.set_title(title, fontsize=6)
    return _finish(figure, path, caption)


def attention_figure(path: Path, distance: np.ndarray, nmi: np.ndarray, classes: Sequence[str], example: np.ndarray,
                     cls_attention: np.ndarray | None, grid: tuple[int, int], pixels: np.ndarray, thresholds:
                     tuple[float, float], title: str, caption: str) -> Path:
    """Per layer: distance and NMI of every head (dots) with the layer's class; then, for one image, the head-averaged
    attention of the centre query patch and of the class token at every layer.

    distance, nmi (layers, heads); example (layers, heads, N, N); cls_attention (layers, heads, N) or None.
    """
    layers = len(distance)
    map_rows = 2 if cls_attention is not None else 1
    figure = plt.figure(figsize=(max(7.0, 1.3 * (layers + 1)), 3.0 + 1.4 * map_rows))
    grid_spec = figure.add_gridspec(1 + map_rows, layers + 1, height_ratios=[2.2] + [1] * map_rows)
    half = (layers + 1) // 2
    for axis, values, label in ((figure.add_subplot(grid_spec[0, :half]), distance, "mean attention distance (px)"),
                                (figure.add_subplot(grid_spec[0, half:]), nmi, "NMI(query; key)")):
        for layer in range(layers):
            axis.scatter(np.full(values.shape[1], layer), values[layer], s=14)
        axis.set_xticks(range(layers), [f"{i}\n{classes[i]}" for i in range(layers)], fontsize=7)
        axis.set_xlabel("layer, class", fontsize=8)
        axis.set_ylabel(label, fontsize=8)
    for threshold in thresholds:
        figure.axes[1].axhline(threshold, color="grey", linestyle="--", linewidth=0.8)
    rows, cols = grid
    centre = (rows // 2) * cols + cols // 2
    show_image(figure.add_subplot(grid_spec[1, 0]), pixels)
    for layer in range(layers):
        axis = figure.add_subplot(grid_spec[1, layer + 1])
        axis.imshow(example[layer].mean(axis=0)[centre].reshape(rows, cols), cmap="viridis")
        axis.plot(cols // 2, rows // 2, "r+")
        axis.set_title(f"layer {layer}: centre query", fontsize=6)
        axis.axis("off")
        if cls_attention is not None:
            axis = figure.add_subplot(grid_spec[2, layer + 1])
            axis.imshow(cls_attention[layer].mean(axis=0).reshape(rows, cols), cmap="viridis")
            axis.set_title(f"layer {layer}: class token", fontsize=6)
            axis.axis("off")
    figure.suptitle(title, fontsize=9)
    return _finish(figure, path, caption)


def filter_health_figure(path: Path, names: Sequence[str], degenerate: np.ndarray, entropy: np.ndarray,
                         orthogonal: np.ndarray, kernels: np.ndarray | None, title: str, caption: str) -> Path:
    """Per 3x3 layer: degenerate share, variance entropy, orthogonality (bars); and the first layer's kernels
    (kernels (K, 3, 3) or None)."""
    panels = 4 if kernels is not None else 3
    figure, axes = plt.subplots(1, panels, figsize=(3.1 * panels, 3.2))
    positions = np.arange(len(names))
    for axis, values, label in zip(axes, (degenerate, entropy, orthogonal),
                                   ("degenerate share", "variance entropy", "orthogonality"), strict=False):
        bars = axis.bar(positions, values, color="tab:blue")
        # values printed on the bars: a share of 0 (the healthy case) is otherwise an empty panel
        if len(names) <= 24:
            axis.bar_label(bars, fmt="%.2f", fontsize=6)
        axis.set_xticks(positions, names, rotation=70, ha="right", fontsize=6)
        axis.set_ylim(0, 1.05)
        axis.set_title(label, fontsize=8)
    if kernels is not None:
        count = len(kernels)
        side = int(np.ceil(np.sqrt(count)))
        mosaic = np.full((side * 4, side * 4), np.nan)
        for index, kernel in enumerate(kernels):
            row, col = divmod(index, side)
            peak = np.abs(kernel).max() or 1.0
            mosaic[row * 4 : row * 4 + 3, col * 4 : col * 4 + 3] = kernel / peak
        axes[-1].imshow(mosaic, cmap="coolwarm", vmin=-1, vmax=1)
        axes[-1].set_title(f"{names[0]}: {count} kernels (each scaled)", fontsize=8)
        axes[-1].axis("off")
    figure.suptitle(title, fontsize=9)
    return _finish(figure, path, caption)
