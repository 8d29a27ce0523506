"""PNG figures of the main job: example maps over their images, mean deletion/insertion curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _normalise(saliency):
    s = np.asarray(saliency, np.float64)
    lo, hi = s.min(), s.max()
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)


def overlay(path, image_u8, saliency, *, title=None, mask=None) -> None:
    """One image with its saliency map (jet, alpha 0.5) and the ground-truth outline."""
    fig, ax = plt.subplots(figsize=(3, 3), dpi=100)
    _draw(ax, image_u8, saliency, mask, title)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _draw(ax, image_u8, saliency, mask, title):
    ax.imshow(image_u8)
    if saliency is not None:
        ax.imshow(_normalise(saliency), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    if mask is not None:
        ax.contour(np.asarray(mask, float), levels=[0.5], colors="white", linewidths=0.8)
    if title:
        ax.set_title(title, fontsize=8)
    ax.axis("off")


def example_grid(path, examples, maps, method_names) -> None:
    """Rows: images; columns: the image with its ground truth, then each method's map."""
    rows, cols = len(examples), 1 + len(method_names)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.0 * rows), dpi=100, squeeze=False)
    for r, example in enumerate(examples):
        mask = example.get("mask")
        _draw(axes[r, 0], example["image"], None, mask, f"label {int(example['label'])}" if r == 0
              else None)
        for c, name in enumerate(method_names, start=1):
            _draw(axes[r, c], example["image"], maps[r][name], mask, name if r == 0 else None)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curves(path, summary) -> None:
    """Mean deletion and insertion curves of every method, with their AUCs in the legend."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for name, s in summary.items():
        for ax, kind in zip(axes, ("deletion", "insertion"), strict=True):
            curve = np.asarray(s[f"mean_{kind}_curve"])
            x = np.linspace(0, 1, len(curve))
            auc = s["metrics"][kind]["mean"]
            ax.plot(x, curve, label=f"{name} ({auc:.3f})")
    for ax, kind in zip(axes, ("Deletion (lower is better)", "Insertion (higher is better)"),
                        strict=True):
        ax.set_title(kind)
        ax.set_xlabel("fraction of pixels changed")
        ax.set_ylabel("target probability")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
