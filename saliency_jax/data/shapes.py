"""``saliency_shapes``: a synthetic classification benchmark with exact ground-truth evidence.

Each image holds ONE target object whose shape class is the label, drawn over a cluttered,
textured background (smooth colour noise or gradients, stripes, checker patches, pixel noise)
together with several distractor objects. Distractors come from a separate set of shapes that
are never a class (line segments, elongated ellipses, thin arcs, waves) and are placed so that
they never touch the target (a 2 px margin). Colour, size, position and rotation of every object
are random and independent of the class. Labels are exactly balanced: every aligned block of
``NUM_CLASSES`` consecutive indices holds each class once, in a random order.

Ground truth (DESIGN §4): ``mask`` is the target's exact visible region, ``boxes`` its tight box.
The target is rendered with 4×4 supersampling (distractors 2×2); a pixel's coverage ``a``
(a multiple of 1/16) blends the object over what lies below, ``pixel = (1 - a)·below +
a·colour``, and the mask is ``a >= 0.5``. The target is drawn last: the mask is what is seen.

Box convention (the whole project): pixel coordinates ``(ymin, xmin, ymax, xmax)`` with
``ymax``/``xmax`` exclusive, so a box covers rows ``ymin .. ymax - 1`` and columns
``xmin .. xmax - 1``; TFDS's normalised boxes are these divided by the image height/width.

Size: the default 112×112 is half the papers' 224×224, so every setting given in pixels in the
papers (the pointing game's 15 px tolerance, RISE cell sizes, deletion step) scales by 0.5.
ResNet-like networks need inputs of at least 96 px on XLA:CPU (PLATFORM.md).

Determinism: example ``i`` of a split is a pure function of ``(seed, split, i)`` (and the
image size), drawn from ``np.random.default_rng(SeedSequence([seed, crc32(split), 1, i]))``,
so any subset can be regenerated without the others. :func:`render_example` renders one
example with numpy only; :func:`generate_arrays` stacks many (a training fast path without
file I/O); :class:`SaliencyShapes` is a TFDS builder (ArrayRecord, prepared offline without
TensorFlow) whose examples equal :func:`render_example`'s.
"""

from __future__ import annotations

import dataclasses
import io
import zlib
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

NAME = "saliency_shapes"
CLASS_NAMES = ("disk", "square", "triangle", "star", "cross", "ring")
NUM_CLASSES = len(CLASS_NAMES)
DISTRACTOR_KINDS = ("segment", "ellipse", "arc", "wave")
DEFAULT_IMAGE_SIZE = 112
DEFAULT_SEED = 0
DEFAULT_SPLIT_SIZES = {"train": 6000, "test": 600}

_SUPERSAMPLE = 4  # the target is rendered with 4×4 samples per pixel
_DISTRACTOR_SUPERSAMPLE = 2  # distractors with 2×2
_MARGIN = 2  # px of clear space kept between the target and any distractor


# ----------------------------------------------------------------------------------------------
# Shapes: implicit "inside" tests in an object's local frame, scaled so the circumradius is 1.


@dataclasses.dataclass(frozen=True)
class Shape:
    """One object to draw. Lengths are in pixels of the rendered image.

    Attributes:
        kind: a class shape (``CLASS_NAMES``) or a distractor shape (``DISTRACTOR_KINDS``).
        center: ``(y, x)`` of the object's centre; pixel ``(i, j)`` covers ``[i, i+1)×[j, j+1)``.
        radius: circumradius of the shape (half its extent along its long axis).
        angle: rotation in radians.
        color: RGB fill colour in [0, 255] at the centre.
        shade: RGB change in colour per ``radius`` along ``shade_angle`` (a linear shading).
        shade_angle: direction of the shading, radians.
        params: kind-specific parameters (see :func:`_inside`).
    """

    kind: str
    center: tuple[float, float]
    radius: float
    angle: float
    color: tuple[float, float, float]
    shade: tuple[float, float, float] = (0.0, 0.0, 0.0)
    shade_angle: float = 0.0
    params: tuple[float, ...] = ()


_STAR_INNER = 0.48  # inner/outer radius of the five-pointed star
_RING_INNER = 0.55  # inner/outer radius of the ring
_CROSS_HALF_WIDTH = 0.32  # half-width of the cross's arms (circumradius 1)


def _inside(kind: str, params: tuple[float, ...], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether local points ``(u, v)`` (circumradius units) lie inside a shape of ``kind``."""
    if kind == "disk":
        return u * u + v * v <= 1.0
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= np.sqrt(0.5)
    if kind == "triangle":  # equilateral, inradius 1/2, a vertex at angle 0
        inside = np.ones(u.shape, bool)
        for k in range(3):
            t = np.pi + 2.0 * np.pi * k / 3.0  # edge normals point away from the vertices
            inside &= u * np.cos(t) + v * np.sin(t) <= 0.5
        return inside
    if kind == "star":  # five points: outer radius 1 at angle 0, inner radius _STAR_INNER
        rho = np.hypot(u, v)
        sector = 2.0 * np.pi / 5.0
        phi = np.abs(np.mod(np.arctan2(v, u) + sector / 2.0, sector) - sector / 2.0)
        px, py = rho * np.cos(phi), rho * np.sin(phi)
        ix, iy = _STAR_INNER * np.cos(sector / 2.0), _STAR_INNER * np.sin(sector / 2.0)
        # Inside if on the origin's side of the edge from the outer (1, 0) to the inner vertex.
        return (ix - 1.0) * py - iy * (px - 1.0) >= 0.0
    if kind == "cross":
        w, half_len = _CROSS_HALF_WIDTH, np.sqrt(1.0 - _CROSS_HALF_WIDTH**2)
        au, av = np.abs(u), np.abs(v)
        return ((au <= w) & (av <= half_len)) | ((av <= w) & (au <= half_len))
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= _RING_INNER**2)
    if kind == "segment":  # params: (half-thickness,)
        return (np.abs(u) <= 1.0) & (np.abs(v) <= params[0])
    if kind == "ellipse":  # params: (minor/major axis ratio,)
        return u * u + (v / params[0]) ** 2 <= 1.0
    if kind == "arc":  # params: (thickness, half-span in radians)
        r2 = u * u + v * v
        return (
            (r2 <= 1.0) & (r2 >= (1.0 - params[0]) ** 2) & (np.abs(np.arctan2(v, u)) <= params[1])
        )
    if kind == "wave":  # params: (half-thickness, amplitude, half-periods over the length)
        return (np.abs(u) <= 1.0) & (
            np.abs(v - params[1] * np.sin(np.pi * params[2] * u)) <= params[0]
        )
    raise ValueError(f"unknown shape kind {kind!r}")


def _extent(shape: Shape) -> float:
    """A bound on the distance from the centre to any inside point, in pixels."""
    if shape.kind == "segment":
        return shape.radius * np.hypot(1.0, shape.params[0])
    if shape.kind == "wave":
        return shape.radius * np.hypot(1.0, shape.params[0] + shape.params[1])
    return shape.radius


@dataclasses.dataclass(frozen=True)
class _Patch:
    """A rendered object: coverage ``alpha`` and fill ``color`` over rows y0:y1, cols x0:x1."""

    y0: int
    y1: int
    x0: int
    x1: int
    alpha: np.ndarray  # f32[y1-y0, x1-x0], multiples of 1/16
    color: np.ndarray  # f32[y1-y0, x1-x0, 3]


def _rasterize(shape: Shape, hw: tuple[int, int], supersample: int = _SUPERSAMPLE) -> _Patch | None:
    """Coverage and shaded colour of ``shape`` over its bounding pixels (``None`` if off-image).

    Coverage is the fraction of ``supersample``×``supersample`` sample points inside the shape.
    """
    h, w = hw
    cy, cx = shape.center
    ext = _extent(shape) + 1.0
    y0, y1 = max(int(np.floor(cy - ext)), 0), min(int(np.ceil(cy + ext)), h)
    x0, x1 = max(int(np.floor(cx - ext)), 0), min(int(np.ceil(cx + ext)), w)
    if y0 >= y1 or x0 >= x1:
        return None
    s = supersample
    ys = y0 + (np.arange((y1 - y0) * s) + 0.5) / s - cy
    xs = x0 + (np.arange((x1 - x0) * s) + 0.5) / s - cx
    dy, dx = ys[:, None].astype(np.float32), xs[None, :].astype(np.float32)
    c, sn = np.cos(shape.angle), np.sin(shape.angle)
    u = (dx * c + dy * sn) / shape.radius
    v = (-dx * sn + dy * c) / shape.radius
    inside = _inside(shape.kind, shape.params, u, v)
    alpha = inside.reshape(y1 - y0, s, x1 - x0, s).sum(axis=(1, 3), dtype=np.int32)
    alpha = alpha.astype(np.float32) / np.float32(s * s)
    py = np.arange(y0, y1) + 0.5 - cy
    px = np.arange(x0, x1) + 0.5 - cx
    along = py[:, None] * np.sin(shape.shade_angle) + px[None, :] * np.cos(shape.shade_angle)
    along = along / shape.radius
    color = np.asarray(shape.color, np.float32) + along[..., None].astype(np.float32) * np.asarray(
        shape.shade, np.float32
    )
    return _Patch(y0, y1, x0, x1, alpha, color)


def _composite(canvas: np.ndarray, patch: _Patch) -> None:
    """In place: ``canvas = (1 - alpha)·canvas + alpha·color`` over the patch."""
    region = canvas[patch.y0 : patch.y1, patch.x0 : patch.x1]
    a = patch.alpha[..., None]
    region[...] = region * (1.0 - a) + patch.color * a


def _full(patch: _Patch | None, hw: tuple[int, int]) -> np.ndarray:
    out = np.zeros(hw, np.float32)
    if patch is not None:
        out[patch.y0 : patch.y1, patch.x0 : patch.x1] = patch.alpha
    return out


def tight_box(mask: np.ndarray) -> np.ndarray:
    """Tight box f32[4] ``(ymin, xmin, ymax, xmax)`` of a non-empty bool mask (max exclusive)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask is empty: it has no box")
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.float32)


def render_scene(
    background: np.ndarray,
    target: Shape,
    distractors: Sequence[Shape] = (),
    *,
    noise: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws distractors, then the target, over ``background``.

    Args:
        background: f32[h, w, 3] in [0, 255].
        target: the class object, drawn last (on top).
        distractors: drawn in order before the target.
        noise: optional f32[h, w, 3] added to the result (sensor noise).

    Returns:
        ``(image uint8[h, w, 3], mask bool[h, w])``: ``mask`` is the target's coverage >= 0.5.
    """
    hw = np.shape(background)[:2]
    patches = [_rasterize(d, hw, _DISTRACTOR_SUPERSAMPLE) for d in distractors]
    return _render_patches(background, _rasterize(target, hw), patches, noise)


def _render_patches(background, target_patch, distractor_patches, noise):
    canvas = np.array(background, np.float32, copy=True)
    hw = canvas.shape[:2]
    for patch in [*distractor_patches, target_patch]:
        if patch is not None:
            _composite(canvas, patch)
    if noise is not None:
        canvas += noise
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, _full(target_patch, hw) >= 0.5


# ----------------------------------------------------------------------------------------------
# Sampling a scene.


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear up-sampling of ``grid [g, g, c]`` to ``[size, size, c]`` (separable, smooth)."""
    g = grid.shape[0]
    pos = (np.arange(size) + 0.5) / size * (g - 1)
    weights = np.stack([np.interp(pos, np.arange(g), np.eye(g)[k]) for k in range(g)], axis=1)
    rows = np.tensordot(weights, grid, axes=(1, 0))  # [size, g, c]
    return np.tensordot(weights, rows, axes=(1, 1)).transpose(1, 0, 2)  # [size, size, c]


def _soft_region(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """A random half-plane or disk in [0, 1] with a soft (≈ 2 px) edge."""
    if rng.random() < 0.5:
        t = rng.uniform(0.0, 2.0 * np.pi)
        d = (
            (yy - size / 2) * np.sin(t)
            + (xx - size / 2) * np.cos(t)
            - rng.uniform(-0.3, 0.3) * size
        )
    else:
        cy, cx = rng.uniform(0.0, size, 2)
        d = np.hypot(yy - cy, xx - cx) - rng.uniform(0.2, 0.5) * size
    return np.clip(0.5 - d / 2.0, 0.0, 1.0)[..., None]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cluttered textured background f32[size, size, 3] in [0, 255]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)

    def colors(n):
        return rng.uniform(20.0, 235.0, (n, 3))

    if rng.random() < 0.5:  # smooth colour noise
        g = int(rng.integers(3, 8))
        base = _upsample(colors(g * g).reshape(g, g, 3), size)
    else:  # linear gradient between two colours
        c0, c1 = colors(2)
        t = rng.uniform(0.0, 2.0 * np.pi)
        s = ((yy * np.sin(t) + xx * np.cos(t)) / size)[..., None]
        s = (s - s.min()) / max(float(np.ptp(s)), 1e-6)
        base = c0 * (1.0 - s) + c1 * s
    if rng.random() < 0.7:  # stripes over a soft region
        c0, c1 = colors(2)
        t = rng.uniform(0.0, np.pi)
        period = rng.uniform(0.04, 0.15) * size
        phase = (yy * np.sin(t) + xx * np.cos(t)) / period + rng.uniform(0.0, 1.0)
        if rng.random() < 0.5:
            s = (np.mod(phase, 1.0) < 0.5).astype(np.float64)
        else:
            s = 0.5 + 0.5 * np.sin(2.0 * np.pi * phase)
        stripes = c0 * (1.0 - s[..., None]) + c1 * s[..., None]
        region = _soft_region(rng, yy, xx, size) * rng.uniform(0.5, 1.0)
        base = base * (1.0 - region) + stripes * region
    if rng.random() < 0.6:  # a rotated checker patch in a rectangle
        c0, c1 = colors(2)
        t = rng.uniform(0.0, np.pi / 2)
        cell = rng.uniform(0.04, 0.09) * size
        u = (xx * np.cos(t) + yy * np.sin(t)) / cell
        v = (-xx * np.sin(t) + yy * np.cos(t)) / cell
        s = ((np.floor(u) + np.floor(v)) % 2)[..., None]
        checker = c0 * (1.0 - s) + c1 * s
        ph, pw = rng.uniform(0.25, 0.6, 2) * size
        py, px = (
            rng.uniform(-0.1 * size, size - 0.5 * ph),
            rng.uniform(-0.1 * size, size - 0.5 * pw),
        )
        region = ((yy >= py) & (yy < py + ph) & (xx >= px) & (xx < px + pw))[..., None]
        base = np.where(region, checker, base)
    return base.astype(np.float32)


def _random_shade(rng: np.random.Generator) -> tuple[tuple[float, float, float], float]:
    return tuple(rng.uniform(-25.0, 25.0) * np.ones(3)), float(rng.uniform(0.0, 2.0 * np.pi))


def _sample_target(rng: np.random.Generator, label: int, size: int) -> Shape:
    radius = rng.uniform(0.10, 0.225) * size  # diameter 20–45 % of the image side
    cy, cx = rng.uniform(radius + 1.0, size - radius - 1.0, 2)
    shade, shade_angle = _random_shade(rng)
    return Shape(
        kind=CLASS_NAMES[label],
        center=(float(cy), float(cx)),
        radius=float(radius),
        angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        color=(0.0, 0.0, 0.0),  # chosen against the background by the caller
        shade=shade,
        shade_angle=shade_angle,
    )


def _sample_distractor(rng: np.random.Generator, size: int) -> Shape:
    kind = DISTRACTOR_KINDS[int(rng.integers(len(DISTRACTOR_KINDS)))]
    radius = rng.uniform(0.08, 0.25) * size
    half_thick = rng.uniform(0.8, 1.8) * size / DEFAULT_IMAGE_SIZE
    if kind == "segment":
        params = (half_thick / radius,)
    elif kind == "ellipse":
        params = (rng.uniform(0.18, 0.4),)
    elif kind == "arc":
        params = (2.0 * half_thick / radius, rng.uniform(np.pi / 6, np.pi / 2))
    else:
        params = (half_thick / radius, rng.uniform(0.12, 0.3), rng.uniform(1.5, 3.5))
    shade, shade_angle = _random_shade(rng)
    return Shape(
        kind=kind,
        center=tuple(float(c) for c in rng.uniform(0.0, size, 2)),
        radius=float(radius),
        angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        color=tuple(float(c) for c in rng.uniform(0.0, 255.0, 3)),
        shade=shade,
        shade_angle=shade_angle,
        params=tuple(float(p) for p in params),
    )


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)×(2r+1) square."""
    out = mask.copy()
    for axis in (0, 1):
        padded = np.pad(out, [(r, r) if a == axis else (0, 0) for a in (0, 1)])
        n = out.shape[axis]
        out = np.logical_or.reduce(
            [np.take(padded, np.arange(k, k + n), axis=axis) for k in range(2 * r + 1)]
        )
    return out


def _split_key(split: str) -> int:
    if not isinstance(split, str) or not split:
        raise ValueError(
            f"split must be a non-empty string such as 'train' or 'test', got {split!r}"
        )
    return zlib.crc32(split.encode("utf-8"))


def label_of(seed: int, split: str, index: int) -> int:
    """The class of example ``index``: each aligned block of NUM_CLASSES indices permutes them."""
    block, pos = divmod(index, NUM_CLASSES)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _split_key(split), 0, block]))
    return int(rng.permutation(NUM_CLASSES)[pos])


def _check_args(seed, index, image_size) -> None:
    for name, value, low in (
        ("seed", seed, 0),
        ("index", index, 0),
        ("image_size", image_size, 32),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Scene:
    """What :func:`render_scene` draws for one example: ``render_scene(background, target,
    distractors, noise=noise)`` gives the example's image and mask."""

    label: int
    background: np.ndarray  # f32[s, s, 3] in [0, 255]
    target: Shape
    distractors: tuple[Shape, ...]
    noise: np.ndarray  # f32[s, s, 3]
    _patches: tuple = dataclasses.field(default=(), repr=False, compare=False)


def sample_scene(
    seed: int, split: str, index: int, *, image_size: int = DEFAULT_IMAGE_SIZE
) -> Scene:
    """Samples the scene of example ``index`` of ``split`` (pure function of the arguments)."""
    _check_args(seed, index, image_size)
    size, hw = int(image_size), (int(image_size), int(image_size))
    label = label_of(seed, split, index)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _split_key(split), 1, index]))
    background = _background(rng, size)
    target = _sample_target(rng, label, size)
    target_patch = _rasterize(target, hw)  # coloured below; shading is additive
    support = _full(target_patch, hw) > 0
    # Target colour: far enough from the background under it to be visible.
    local = background[support].mean(axis=0)
    candidates = rng.uniform(0.0, 255.0, (16, 3))
    distance = np.linalg.norm(candidates - local, axis=1)
    good = np.flatnonzero(distance >= 100.0)
    color = candidates[good[0] if good.size else int(np.argmax(distance))]
    target = dataclasses.replace(target, color=tuple(float(c) for c in color))
    target_patch = dataclasses.replace(
        target_patch, color=target_patch.color + np.asarray(target.color, np.float32)
    )
    # Distractors: rejection-sampled so that none comes within _MARGIN px of the target.
    forbidden = _dilate(support, _MARGIN)
    distractors, patches = [], []
    for _ in range(int(rng.integers(3, 7))):
        for _attempt in range(10):
            d = _sample_distractor(rng, size)
            patch = _rasterize(d, hw, _DISTRACTOR_SUPERSAMPLE)
            if patch is None:
                continue
            hit = forbidden[patch.y0 : patch.y1, patch.x0 : patch.x1] & (patch.alpha > 0)
            if not hit.any():
                distractors.append(d)
                patches.append(patch)
                break
    noise = rng.standard_normal((size, size, 3), dtype=np.float32)
    noise *= np.float32(rng.uniform(2.0, 6.0))
    return Scene(label, background, target, tuple(distractors), noise, (target_patch, patches))


def render_example(
    seed: int, split: str, index: int, *, image_size: int = DEFAULT_IMAGE_SIZE
) -> dict[str, np.ndarray | int]:
    """Renders example ``index`` of ``split`` (a pure function of its arguments; numpy only).

    Returns:
        ``{"image": uint8[s, s, 3], "label": int, "mask": bool[s, s], "boxes": f32[1, 4]}``,
        the box in pixels ``(ymin, xmin, ymax, xmax)``, max exclusive.
    """
    scene = sample_scene(seed, split, index, image_size=image_size)
    target_patch, patches = scene._patches
    image, mask = _render_patches(scene.background, target_patch, patches, scene.noise)
    return {"image": image, "label": scene.label, "mask": mask, "boxes": tight_box(mask)[None]}


def generate_arrays(
    split: str,
    n: int,
    *,
    seed: int = DEFAULT_SEED,
    image_size: int = DEFAULT_IMAGE_SIZE,
    start: int = 0,
) -> dict[str, np.ndarray]:
    """Examples ``start .. start + n - 1`` of ``split``, stacked (no file I/O).

    Returns:
        ``{"image": uint8[n, s, s, 3], "label": int32[n], "mask": bool[n, s, s],
        "boxes": f32[n, 1, 4]}``.
    """
    _check_args(seed, start, image_size)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    s = int(image_size)
    out = {
        "image": np.empty((n, s, s, 3), np.uint8),
        "label": np.empty((n,), np.int32),
        "mask": np.empty((n, s, s), bool),
        "boxes": np.empty((n, 1, 4), np.float32),
    }
    for i in range(n):
        ex = render_example(seed, split, start + i, image_size=s)
        for k, arr in out.items():
            arr[i] = ex[k]
    return out


# ----------------------------------------------------------------------------------------------
# TFDS builder (ArrayRecord; prepares without TensorFlow or network access).


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclasses.dataclass
class SaliencyShapesConfig(tfds.core.BuilderConfig):
    """Shape-determining settings of a prepared copy (the config name names its directory)."""

    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = DEFAULT_SEED
    split_sizes: tuple[tuple[str, int], ...] = tuple(DEFAULT_SPLIT_SIZES.items())


# Under `python -m saliency_jax.data.shapes` this file runs twice (as the package's module and
# as __main__); only the package's class is registered with TFDS.
class SaliencyShapes(tfds.core.GeneratorBasedBuilder, skip_registration=__name__ == "__main__"):
    """TFDS builder of ``saliency_shapes`` (see the module docstring).

    Features: ``image`` (PNG, s×s×3), ``mask`` (PNG, s×s×1, 0/255), ``label`` (ClassLabel),
    ``bbox`` (normalised BBox of the target, max exclusive), ``index`` (the example index).
    Configs ``"112"`` (default), ``"224"``, ``"64"``: 6000 train / 600 test images; pass
    ``config=SaliencyShapesConfig(name=..., image_size=..., split_sizes=...)`` for others.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        SaliencyShapesConfig(name=str(s), description=f"{s}×{s} images", image_size=s)
        for s in (DEFAULT_IMAGE_SIZE, 224, 64)
    ]
    DEFAULT_CONFIG_NAME = str(DEFAULT_IMAGE_SIZE)
    # Nothing is downloaded. Setting this skips TFDS's search for a checksums file next to the
    # code, which probes `importlib_resources` (not installed here) for a class in a package.
    url_infos = None

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[1],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(s, s, 3), encoding_format="png"),
                    "mask": tfds.features.Image(shape=(s, s, 1), encoding_format="png"),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                    "bbox": tfds.features.BBoxFeature(),
                    "index": np.int64,
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # record i is example i
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {
            split: self._generate_examples(split, n) for split, n in self.builder_config.split_sizes
        }

    def _generate_examples(self, split: str, n: int):
        cfg = self.builder_config
        s = cfg.image_size
        for i in range(n):
            ex = render_example(cfg.seed, split, i, image_size=s)
            ymin, xmin, ymax, xmax = (ex["boxes"][0] / s).tolist()
            yield (
                i,
                {
                    "image": _png(ex["image"]),
                    "mask": _png(ex["mask"].astype(np.uint8) * 255),
                    "label": ex["label"],
                    "bbox": tfds.features.BBox(ymin=ymin, xmin=xmin, ymax=ymax, xmax=xmax),
                    "index": i,
                },
            )


def shapes_config(
    image_size: int = DEFAULT_IMAGE_SIZE,
    *,
    seed: int = DEFAULT_SEED,
    split_sizes: dict[str, int] | None = None,
) -> SaliencyShapesConfig:
    """The builder config for a size, seed and split sizes; named ``"112"`` for the defaults."""
    _check_args(seed, 0, image_size)
    sizes = dict(DEFAULT_SPLIT_SIZES if split_sizes is None else split_sizes)
    for split, n in sizes.items():
        _split_key(split)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"split_sizes[{split!r}] must be an integer >= 1, got {n!r}")
    name = str(image_size)
    if seed != DEFAULT_SEED:
        name += f"_seed{seed}"
    if sizes != DEFAULT_SPLIT_SIZES:
        name += "_" + "_".join(f"{k}{v}" for k, v in sizes.items())
    if name in SaliencyShapes.builder_configs:  # TFDS refuses a new config under a known name
        return SaliencyShapes.builder_configs[name]
    return SaliencyShapesConfig(
        name=name,
        description=f"{image_size}×{image_size} images, seed {seed}, splits {sizes}",
        image_size=int(image_size),
        seed=int(seed),
        split_sizes=tuple((k, int(v)) for k, v in sizes.items()),
    )


def prepare(
    data_dir: str,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = DEFAULT_SEED,
    split_sizes: dict[str, int] | None = None,
) -> SaliencyShapes:
    """Prepares ``saliency_shapes`` under ``data_dir`` (ArrayRecord; offline, no TensorFlow).

    Returns the builder; read it back with ``builder.as_data_source(split)`` or
    :func:`saliency_jax.data.load`. Preparing an existing copy is a no-op.
    """
    builder = SaliencyShapes(
        config=shapes_config(image_size, seed=seed, split_sizes=split_sizes),
        data_dir=str(data_dir),
        file_format="array_record",
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP
        )
    )
    return builder


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse
    import time

    p = argparse.ArgumentParser(description="Prepare the saliency_shapes TFDS dataset (offline).")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--train", type=int, default=DEFAULT_SPLIT_SIZES["train"])
    p.add_argument("--test", type=int, default=DEFAULT_SPLIT_SIZES["test"])
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    b = prepare(
        a.data_dir,
        image_size=a.image_size,
        seed=a.seed,
        split_sizes={"train": a.train, "test": a.test},
    )
    print(f"prepared {b.info.full_name} in {b.data_dir} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    from saliency_jax.data.shapes import _main as _package_main

    _package_main()
