"""Writing generated images: ``.png`` grids and ``.npy`` arrays (headless, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gan_cli.core.errors import UserError


def image_grid(x: np.ndarray, cols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile ``(N, H, W, C)`` images in [-1, 1] into one ``(rows*(H+pad)+pad, cols*(W+pad)+pad, C)`` array in [0, 1].

    Padding is mid-grey so black and white digits both stand out; NaN pixels (empty cells, see
    ``class_rows``) are drawn in the padding grey too.
    """
    x = np.asarray(x, dtype=np.float32)
    x = np.clip((np.where(np.isnan(x), 0.0, x) + 1.0) * 0.5, 0.0, 1.0)
    n, h, w, c = x.shape
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 0.5, dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[top:top + h, left:left + w] = x[i]
    return grid


def class_rows(x: np.ndarray, labels: np.ndarray, num_classes: int, cols: int) -> np.ndarray:
    """Arrange images by class: row ``k`` holds the first ``cols`` images with label ``k``.

    Returns ``(num_classes * cols, H, W, C)`` cells; missing images are NaN, drawn as empty
    grey cells by ``image_grid``. The order inside a row follows ``x``, so a fixed
    evaluation batch keeps every image in the same cell from one snapshot to the next.
    """
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    cells = np.full((num_classes * cols, *x.shape[1:]), np.nan, dtype=np.float32)
    for k in range(num_classes):
        idx = np.flatnonzero(labels == k)[:cols]
        cells[k * cols:k * cols + len(idx)] = x[idx]
    return cells


def write_png_grid(x: np.ndarray, path: Path, labels: np.ndarray | None = None,
                   class_names: list[str] | None = None, cols: int | None = None,
                   row_labels: list[str] | None = None) -> None:
    """Save model-space images ``(N, H, W, C)`` in [-1, 1] as a PNG grid.

    ``labels`` (``(N,)`` int) are drawn as small captions on every cell; ``row_labels`` (one
    string per row) only on the first cell of each row. ``cols`` defaults to ceil(sqrt(N)).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n, h, w, c = x.shape
    cols = max(1, int(cols)) if cols else max(1, math.ceil(math.sqrt(n)))
    grid = image_grid(x, cols=cols)
    # ~0.6 inch per cell, at most ~16 inches wide; at least 1 screen pixel per image pixel.
    cell_in = min(0.6 * max(h, w) / 8, 16.0 / cols) if max(h, w) < 64 else min(1.2, 16.0 / cols)
    rows = math.ceil(n / cols)
    dpi = max(100, int(math.ceil(max(h, w) / cell_in)))
    fig = Figure(figsize=(cols * cell_in, rows * cell_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    captions: list[tuple[int, str]] = []
    if labels is not None:
        for i, lab in enumerate(np.asarray(labels).reshape(-1)[:n]):
            name = class_names[int(lab)] if class_names and 0 <= int(lab) < len(class_names) else str(int(lab))
            captions.append((i, name))
    elif row_labels is not None:
        captions = [(r * cols, str(name)) for r, name in enumerate(row_labels[:rows])]
    for i, name in captions:
        r, k = divmod(i, cols)
        ax.text(1 + k * (w + 1), 1 + r * (h + 1), name, color="yellow", fontsize=6, va="top", ha="left",
                bbox=dict(facecolor="black", alpha=0.5, pad=0.5, linewidth=0))
    fig.savefig(path, dpi=dpi)


def write_image_samples(data, x: np.ndarray, labels: np.ndarray | None, path: Path) -> None:
    """``.png`` -> grid; ``.npy`` -> ``data.to_user_space(x)`` (``data``: an ImageDataset) (original pixel range, (N,H,W) for 1 channel)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(data.sample_shape):
        raise ValueError(f"expected images of shape (N, {', '.join(map(str, data.sample_shape))}), got {x.shape}")
    suffix = path.suffix.lower()
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        write_png_grid(x, path, labels, getattr(data, "class_names", None))
    elif suffix == ".npy":
        np.save(path, data.to_user_space(x))
    else:
        raise UserError(f"cannot write {path.name}: image datasets write .png grids or .npy arrays; use -o FILE.png or -o FILE.npy")
