"""One figure style for the whole book, and the plots more than one chapter draws."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from jax.typing import ArrayLike

__all__ = ["BOOK_STYLE", "digit_grid", "use_book_style"]

# Mid-tone colours, transparent background: readable on the light and the dark theme.
BOOK_STYLE: dict[str, object] = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.facecolor": "none",
    "axes.facecolor": "none",
    "savefig.facecolor": "none",
    "axes.edgecolor": "#808080",
    "axes.labelcolor": "#808080",
    "xtick.color": "#808080",
    "ytick.color": "#808080",
    "text.color": "#808080",
    "axes.titlecolor": "#808080",
    "axes.grid": True,
    "grid.color": "#808080",
    "grid.alpha": 0.25,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "font.size": 10,
    "axes.prop_cycle": mpl.cycler(
        color=[
            "#1f77b4",
            "#ff7f0e",
            "#2ca02c",
            "#d62728",
            "#9467bd",
            "#8c564b",
            "#e377c2",
        ]
    ),
    "svg.hashsalt": "companion",  # deterministic ids when saving SVG
}


def use_book_style() -> None:
    """Apply the book's matplotlib style to every later figure."""
    mpl.rcParams.update(BOOK_STYLE)


def digit_grid(
    images: ArrayLike,
    labels: Sequence[int] | ArrayLike,
    *,
    ncols: int = 8,
    title: str | None = None,
) -> plt.Figure:
    """A grid of MNIST digits, each titled with its label.

    Args:
        images: shape ``(K, 784)`` or ``(K, 28, 28)``, values in [0, 1].
        labels: shape ``(K,)``.
        ncols: digits per row.
        title: an optional figure title.
    """
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 2 and imgs.shape[1] == 28 * 28:
        imgs = imgs.reshape(-1, 28, 28)
    if imgs.ndim != 3 or imgs.shape[1:] != (28, 28):
        raise ValueError(
            f"images must have shape (K, 784) or (K, 28, 28); got {np.shape(images)}"
        )
    labs = np.asarray(labels)
    if labs.shape != (imgs.shape[0],):
        raise ValueError(
            f"need one label per image: {imgs.shape[0]} images, labels {labs.shape}"
        )
    nrows = -(-imgs.shape[0] // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.0 * ncols, 1.15 * nrows), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, lab in zip(axes.flat, imgs, labs, strict=False):
        ax.imshow(img, cmap="gray_r", vmin=0.0, vmax=1.0)
        ax.set_title(str(int(lab)), fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
