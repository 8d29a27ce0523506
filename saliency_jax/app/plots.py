"""PNG figures: one map over its image with a colour bar, example maps of a run, mean curves.

Images are shown at their own aspect ratio (never squashed into a square); a map is drawn over
the image it was computed for, resized to it by the caller where the model saw a resized copy.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

OVERLAY_INCHES = 6.0
"""The longer side of :func:`overlay`'s image, in inches at 100 dpi (600 px)."""


def _normalise(saliency):
    s = np.asarray(saliency, np.float64)
    lo, hi = s.min(), s.max()
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)


def _outline(ax, mask):
    if mask is not None and np.any(mask):
        ax.contour(np.asarray(mask, float), levels=[0.5], colors="white", linewidths=1.0)


NEARLY_CONSTANT = 1e-3
"""A map whose range is under this fraction of its largest magnitude is *nearly constant*: its
differences are at the level of noise, and stretching the colours over them would show noise
as structure."""


def nearly_constant(saliency) -> bool:
    """Whether ``saliency`` varies by less than :data:`NEARLY_CONSTANT` of its magnitude (a
    constant map included)."""
    s = np.asarray(saliency, np.float64)
    lo, hi = float(s.min()), float(s.max())
    return hi - lo <= NEARLY_CONSTANT * max(abs(lo), abs(hi), 1e-12)


def overlay(path, image_u8, saliency, *, title=None, mask=None) -> None:
    """``image_u8`` (its own size and aspect ratio) with ``saliency`` over it (jet, alpha 0.5),
    the ground-truth outline (``mask``) in white, and a colour bar in the map's own values.

    The colours span the map's range ``[min, max]`` so its structure shows; the bar's ticks are
    the real values and its label states the range, so a narrow range (e.g. 0.663-0.721) is
    visible as such. A :func:`nearly_constant` map (range <= 0.1 % of its values) is drawn as
    one colour and labelled as nearly constant, rather than its noise stretched over the bar.
    """
    image = np.asarray(image_u8)
    h, w = image.shape[:2]
    scale = OVERLAY_INCHES / max(h, w)
    fig, ax = plt.subplots(figsize=(w * scale + 1.4, h * scale + 0.6), dpi=100)
    ax.imshow(image)
    if saliency is not None:
        s = np.asarray(saliency, np.float64)
        if s.shape != (h, w):
            raise ValueError(f"saliency must have the image's shape {(h, w)}, got {s.shape}")
        lo, hi = float(s.min()), float(s.max())
        flat = nearly_constant(s)
        if flat:  # one colour: the middle of a bar that spans the map's magnitude
            half = max(abs(lo), abs(hi), 1e-12) * 0.5
            mid = 0.5 * (lo + hi)
            vmin, vmax = mid - half, mid + half
        else:
            vmin, vmax = lo, hi
        shown = ax.imshow(s, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        if hi == lo:
            text = f"saliency: constant {lo:.4g}"
        elif flat:
            text = f"saliency: nearly constant ({lo:.4g} to {hi:.4g})"
        else:
            text = f"saliency: {lo:.4g} to {hi:.4g}"
        bar.set_label(text, fontsize=9)
    _outline(ax, mask)
    if title:
        ax.set_title(title, fontsize=10)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _draw(ax, image_u8, saliency, mask, title):
    ax.imshow(image_u8)
    if saliency is not None:
        ax.imshow(_normalise(saliency), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    _outline(ax, mask)
    if title:
        ax.set_title(title, fontsize=8)
    ax.axis("off")


def _class_text(label, names) -> str:
    label = int(label)
    if label < 0:
        return "no label"
    return f"{names[label]} ({label})" if names is not None and label < len(names) else \
        f"class {label}"


def example_grid(path, examples, maps, method_names, class_names=None, targets=None,
                 num_images=None) -> None:
    """Rows: images; columns: the image with its ground truth and class, then each method's map
    (min-max normalised per map, one shared colour bar). ``targets[r]`` (the class explained) is
    shown where it differs from the label; ``num_images`` (default: the rows) states the
    selection when the figure shows only the first of them."""
    rows, cols = len(examples), 1 + len(method_names)
    num_images = rows if num_images is None else num_images
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols + 0.6, 2.1 * rows + 0.5), dpi=100,
                             squeeze=False)
    for r, example in enumerate(examples):
        mask = example.get("mask")
        label = int(example.get("label", -1))
        text = f"#{r} {_class_text(label, class_names)}"
        if targets is not None and int(targets[r]) != label:
            text += f"\nexplained: {_class_text(targets[r], class_names)}"
        _draw(axes[r, 0], example["image"], None, mask, text)
        for c, name in enumerate(method_names, start=1):
            _draw(axes[r, c], example["image"], maps[r][name], mask, name)
    shown = (f"all {rows} images" if rows == num_images
             else f"the first {rows} of {num_images} images")
    height = fig.get_size_inches()[1]
    fig.suptitle(f"{shown}; white: ground-truth outline; maps min-max normalised per map",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.0 / fig.get_size_inches()[0], 1 - 0.3 / height))
    scalar = plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0, 1))
    width = fig.get_size_inches()[0]
    cax = fig.add_axes((1 - 0.85 / width, 0.1, 0.12 / width, 0.8))
    bar = fig.colorbar(scalar, cax=cax)
    bar.set_label("map value (0 = its min, 1 = its max)", fontsize=8)
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
