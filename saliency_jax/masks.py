"""RISE random masks and the mirror-boundary bilinear up-sampling they are built with.

Mask ``i`` of a set draws its grid and shift from ``jax.random.fold_in(key, i)`` only, so any
range of masks can be made on its own and the set never depends on how it is chunked::

    masks = sj.masks.generate_rise_masks(key, 100, grid=7, p_keep=0.5, image_hw=(112, 112))
"""

from saliency_jax._src.masks import (
    cell_size,
    generate_rise_masks,
    mask_from_grid,
    mirror_bilinear_resize,
    rise_mask,
    rise_masks_at,
    upsample_matrix,
)

__all__ = [
    "cell_size",
    "generate_rise_masks",
    "mask_from_grid",
    "mirror_bilinear_resize",
    "rise_mask",
    "rise_masks_at",
    "upsample_matrix",
]
