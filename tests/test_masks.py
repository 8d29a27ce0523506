"""RISE masks and the mirror-bilinear up-sampling (METHODS §1.2)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import rise_numpy
from skimage.transform import resize

from saliency_jax import masks


def _formula_matrix(size_in, size_out):
    """METHODS §1.2 written out with scalar loops: u = (x+0.5)s/U - 0.5, mirrored neighbours."""
    out = np.zeros((size_out, size_in))
    for x in range(size_out):
        u = (x + 0.5) * size_in / size_out - 0.5
        i0 = math.floor(u)
        frac = u - i0
        for i, weight in ((i0, 1.0 - frac), (i0 + 1, frac)):
            while i < 0 or i > size_in - 1:  # mirror about the edge sample (size_in >= 2 here)
                i = -i if i < 0 else 2 * (size_in - 1) - i
            out[x, i] += weight
    return out


@pytest.mark.parametrize("s", [7, 8, 10, 14])
def test_upsample_matrix_equals_skimage_reflect_resize(s):
    cell = math.ceil(224 / s)
    up = (s + 1) * cell
    grid = (np.random.default_rng(s).random((s, s)) < 0.5).astype(np.float64)
    expected = resize(grid, (up, up), order=1, mode="reflect", anti_aliasing=False)
    r = masks.upsample_matrix(s, up)
    assert r.shape == (up, s) and r.dtype == np.float32
    r = r.astype(np.float64)
    np.testing.assert_allclose(r @ grid @ r.T, expected, rtol=0, atol=1e-5)


def test_mirror_bilinear_resize_equals_skimage_on_rectangles():
    x = np.random.default_rng(0).random((5, 9))
    for size in [(37, 64), (5, 9), (3, 4), (11, 9)]:
        expected = resize(x, size, order=1, mode="reflect", anti_aliasing=False)
        got = np.asarray(masks.mirror_bilinear_resize(x, size))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size_in,size_out", [(7, 256), (3, 10), (5, 5), (10, 4), (2, 9), (14, 30)])
def test_upsample_matrix_equals_written_out_formula(size_in, size_out):
    np.testing.assert_allclose(
        masks.upsample_matrix(size_in, size_out), _formula_matrix(size_in, size_out), atol=1e-7
    )


def test_upsample_matrix_rows_sum_to_one_and_single_sample_is_constant():
    for size_in, size_out in [(7, 256), (10, 253), (3, 5)]:
        np.testing.assert_allclose(masks.upsample_matrix(size_in, size_out).sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(masks.upsample_matrix(1, 6), np.ones((6, 1), np.float32))


def test_upsample_matrix_hand_computed_2_to_4():
    # u = (x + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25; u = -0.25 mixes sample 0 (weight 0.75)
    # with sample mirror(-1) = 1 (weight 0.25).
    expected = np.array([[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.25, 0.75]])
    np.testing.assert_allclose(masks.upsample_matrix(2, 4), expected, atol=1e-7)


def test_jax_image_resize_is_not_the_reference_upsampling():
    # jax.image.resize clamps at the border where skimage 'reflect' mirrors: they agree inside
    # and differ by up to ~0.74 in the outer half cell (METHODS §1.2). Hence upsample_matrix.
    s, up = 7, 256
    grid = np.zeros((s, s))
    grid[0, 0] = 1.0  # a lone corner cell: clamping keeps 1 at the corner, mirroring ~0.26
    ours = np.asarray(masks.mirror_bilinear_resize(grid, (up, up)))
    theirs = np.asarray(jax.image.resize(jnp.asarray(grid, jnp.float32), (up, up), "linear"))
    half_cell = up // (2 * s) + 1
    inner = (slice(half_cell, up - half_cell),) * 2
    np.testing.assert_allclose(ours[inner], theirs[inner], atol=1e-5)
    assert np.abs(ours - theirs).max() > 0.4


def test_mask_from_grid_equals_reference_resize_and_crop():
    rng = np.random.default_rng(1)
    for s, hw in [(7, (32, 32)), (8, (24, 40)), (4, (17, 23))]:
        ref_masks, grids, shifts = rise_numpy.generate_masks(6, s, 0.5, hw, rng)
        got = jax.vmap(functools.partial(masks.mask_from_grid, image_hw=hw))(
            jnp.asarray(grids, jnp.float32), jnp.asarray(shifts, jnp.int32)
        )
        np.testing.assert_allclose(np.asarray(got), ref_masks, rtol=0, atol=1e-5)


def test_mask_statistics(key):
    n, hw = 1000, (24, 32)
    for p in (0.1, 0.5):
        m = np.asarray(masks.generate_rise_masks(key, n, grid=(4, 5), p_keep=p, image_hw=hw))
        assert m.shape == (n, *hw) and m.dtype == np.float32
        assert m.min() >= 0.0 and m.max() <= 1.0
        per_mask = m.mean(axis=(1, 2))
        standard_error = per_mask.std() / math.sqrt(n)
        assert abs(per_mask.mean() - p) < 4 * standard_error
        if p == 0.5:  # (at p = 0.1, 12% of 4x5 grids are all zeros)
            assert len({mm.tobytes() for mm in m}) == n  # all distinct


def test_mask_distribution_matches_reference_generator(key):
    # Same law as the reference generator: per-pixel mean and the average second moment (which
    # depends on the up-sampling and the shift range) agree within a few standard errors.
    n, s, p, hw = 2000, 7, 0.5, (28, 28)
    ours = np.asarray(masks.generate_rise_masks(key, n, grid=s, p_keep=p, image_hw=hw), np.float64)
    ref, _, _ = rise_numpy.generate_masks(n, s, p, hw, np.random.default_rng(0))
    for stat in (lambda m: m.mean(axis=(1, 2)), lambda m: (m**2).mean(axis=(1, 2)),
                 lambda m: m[:, :4, :4].mean(axis=(1, 2))):
        a, b = stat(ours), stat(ref)
        se = math.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 4 * se


def test_masks_are_a_function_of_key_and_index_only(key):
    kw = dict(grid=5, p_keep=0.5, image_hw=(20, 20))
    full = masks.generate_rise_masks(key, 20, **kw)
    np.testing.assert_array_equal(full, masks.generate_rise_masks(key, 20, **kw))
    np.testing.assert_array_equal(full[7:15], masks.generate_rise_masks(key, 8, start=7, **kw))
    np.testing.assert_array_equal(full[3], masks.rise_mask(key, 3, **kw))
    other = masks.generate_rise_masks(jax.random.key(1), 20, **kw)
    assert not np.any(np.all(np.asarray(full) == np.asarray(other), axis=(1, 2)))


def test_p_keep_one_keeps_everything(key):
    m = masks.generate_rise_masks(key, 5, grid=3, p_keep=1.0, image_hw=(10, 13))
    np.testing.assert_allclose(m, 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_masks=0), "num_masks"),
        (dict(grid=0), "grid"),
        (dict(grid=(3, 4, 5)), "grid"),
        (dict(grid=40), "grid"),
        (dict(grid=(4, 33)), "grid"),
        (dict(p_keep=0.0), "p_keep"),
        (dict(p_keep=1.5), "p_keep"),
    ],
)
def test_generate_rise_masks_rejects_bad_arguments(key, kwargs, match):
    args = dict(num_masks=4, grid=4, p_keep=0.5, image_hw=(32, 32)) | kwargs
    with pytest.raises(ValueError, match=match):
        masks.generate_rise_masks(key, args.pop("num_masks"), **args)


def test_upsample_matrix_rejects_bad_sizes():
    with pytest.raises(ValueError, match="size_in"):
        masks.upsample_matrix(0, 4)
    with pytest.raises(ValueError, match="size_out"):
        masks.upsample_matrix(3, 0)
