"""A numpy port of LIME's image explainer (``marcotcr/lime``), for parity tests.

``lime_image.LimeImageExplainer.explain_instance`` -> ``data_labels`` (perturb superpixels, score
in batches), ``sklearn.metrics.pairwise_distances(data, data[0], metric="cosine")``, the kernel
``sqrt(exp(-d² / w²))``, and ``lime_base.explain_instance_with_data`` with every feature kept
(``num_features=100000``): ``Ridge(alpha=1, fit_intercept=True).fit(data, labels,
sample_weight=weights)``. The sample matrix ``data`` is an input here (LIME draws it with
``randint(0, 2)`` and sets row 0 to ones), so the same samples can be fed to both sides.
Float64 throughout; no JAX.
"""

from __future__ import annotations

import numpy as np


def data_labels(image, fudged_image, segments, classifier_fn, data, batch_size=10):
    """LIME ``data_labels`` with given ``data`` (``int[N, n]``): the scores ``[N, k]``."""
    labels, imgs = [], []
    for row in data:
        temp = np.array(image, copy=True)
        zeros = np.where(row == 0)[0]
        mask = np.zeros(segments.shape, bool)
        for z in zeros:
            mask[segments == z] = True
        temp[mask] = fudged_image[mask]
        imgs.append(temp)
        if len(imgs) == batch_size:
            labels.extend(classifier_fn(np.array(imgs)))
            imgs = []
    if imgs:
        labels.extend(classifier_fn(np.array(imgs)))
    return np.array(labels, np.float64)


def cosine_distance_to_first(data):
    """``pairwise_distances(data, data[0:1], metric="cosine").ravel()`` as sklearn computes it:
    rows normalised to unit length (a zero row stays zero), distance ``1 − cos``, clipped to
    ``[0, 2]``."""
    x = np.asarray(data, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms == 0.0, 1.0, norms)
    return np.clip(1.0 - x @ x[0], 0.0, 2.0)


def kernel(d, kernel_width=0.25):
    """LIME's default image kernel."""
    return np.sqrt(np.exp(-(d**2) / kernel_width**2))


def weighted_ridge(x, y, sample_weight, alpha=1.0):
    """``Ridge(alpha, fit_intercept=True).fit(x, y, sample_weight)``: ``(coef, intercept)``.

    Minimises ``Σ_i w_i (y_i − x_i·β − b)² + alpha ‖β‖²`` (the intercept is not penalised) as
    one least-squares problem: rows ``sqrt(w_i) [x_i, 1]`` against ``sqrt(w_i) y_i``, plus rows
    ``sqrt(alpha) [e_j, 0]`` against 0.
    """
    x = np.asarray(x, np.float64)
    n, m = x.shape
    sw = np.sqrt(np.asarray(sample_weight, np.float64))
    design = np.concatenate([
        np.concatenate([x, np.ones((n, 1))], axis=1) * sw[:, None],
        np.concatenate([np.sqrt(alpha) * np.eye(m), np.zeros((m, 1))], axis=1),
    ])
    target = np.concatenate([np.asarray(y, np.float64) * sw, np.zeros(m)])
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    return solution[:m], solution[m]


def explain(image, fudged_image, segments, classifier_fn, data, label, *, kernel_width=0.25,
            alpha=1.0):
    """LIME's surrogate for ``label`` on the samples ``data``: ``(coef[n], intercept)``."""
    labels = data_labels(image, fudged_image, segments, classifier_fn, data)
    weights = kernel(cosine_distance_to_first(data), kernel_width)
    return weighted_ridge(data, labels[:, label], weights, alpha)
