"""Pictures of a run: sample grids, 2-D scatters and loss curves (host side, Matplotlib)."""

import numbers
import os

import matplotlib

matplotlib.use("Agg")  # files only: works on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tinygan import files  # noqa: E402


def save_figure(fig, path):
    """Lay out and write ``fig`` to ``path`` whole or not at all, then free it (also when
    the write fails: pyplot keeps every open figure alive)."""
    try:
        fig.tight_layout()
        with files.written_atomically(path) as tmp:
            # the format named, not guessed from the temporary name: Matplotlib would add
            # ".png" to a name without an extension and leave that file behind
            fig.savefig(tmp, format=os.path.splitext(str(path))[1][1:] or "png")
    finally:
        plt.close(fig)


def image_grid(images, rows):
    """(N, C, H, W) in [-1, 1] -> one (rows*H, cols*W[, C]) image in [0, 1], row-major."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):  # (N, H, W, C) would scramble
        raise ValueError(f"image_grid: expected images of shape (N, C, H, W) with C = 1 or 3, "
                         f"got {images.shape}")
    if not (isinstance(rows, numbers.Integral) and rows >= 1):
        raise ValueError(f"image_grid: rows must be a positive int, got {rows!r}")
    n, c, h, w = images.shape
    cols = -(-n // rows)
    canvas = np.ones((rows * h, cols * w, c), dtype=np.float32)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        canvas[r * h : (r + 1) * h, k * w : (k + 1) * w] = img.transpose(1, 2, 0)
    canvas = (canvas + 1) / 2
    return np.clip(canvas[..., 0] if c == 1 else canvas, 0, 1)


def save_image_grid(path, images, rows, title=None, row_labels=None):
    grid = image_grid(images, rows)
    fig, ax = plt.subplots(figsize=(grid.shape[1] / 40 + 0.6, grid.shape[0] / 40 + 0.6), dpi=100)
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    if row_labels is not None:  # conditional models: say which class each row was asked for
        h = grid.shape[0] // rows
        ax.set_yticks([h * (i + 0.5) for i in range(rows)], [str(r) for r in row_labels])
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def save_scatter(path, samples, real, title=None):
    """Generated 2-D points (orange) over the real data (blue)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.scatter(real[:, 0], real[:, 1], s=2, alpha=0.3, label="real")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, label="generated")
    ax.set_aspect("equal")
    # below the axes: inside, it hid the grid's corner mode at (4, 4)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.05), ncol=2, fontsize=8, markerscale=4,
              frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def save_curves(path, history, metrics=None):
    """Loss curves against the step; evaluation metrics (if any) in a second panel."""
    panels = 2 if metrics else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.2), dpi=100, squeeze=False)
    ax = axes[0, 0]
    for key in ("d_loss", "g_loss"):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, label=key, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if ax.get_lines():  # no loss logged yet (a long run's first picture): no empty legend
        ax.legend(fontsize=8)
    if metrics:
        ax = axes[0, 1]
        names = sorted({k for m in metrics for k in m if k not in ("step", "epoch")})
        for name in names:
            points = [(m["step"], m[name]) for m in metrics  # NumPy numbers too, not bools
                      if isinstance(m.get(name), numbers.Real)
                      and not isinstance(m.get(name), bool)]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o", label=name, linewidth=1)
        values = [v for line in ax.get_lines() for v in line.get_ydata() if np.isfinite(v)]
        if values and min(values) > 0:  # FD (hundreds) and scores (units) share the panel
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title("evaluation", fontsize=9)
        if ax.get_lines():
            ax.legend(fontsize=7)
    save_figure(fig, path)
