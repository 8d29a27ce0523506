"""saliency-jax: black-box saliency for image classifiers, compiled with JAX.

One namespace is the library::

    import jax
    import saliency_jax as sj

    region = jax.numpy.zeros((8, 8), bool).at[2:6, 2:6].set(True)
    model_fn = sj.testing.region_model(region)          # any ModelFn
    image = jax.numpy.ones((8, 8, 3))
    saliency = sj.rise(jax.random.key(0), model_fn, image, 0,
                       config=sj.RiseConfig(num_masks=64, grid=2))   # f32[8, 8]
    curve = sj.metrics.deletion(model_fn, image, saliency, 0, step=8)

Explainers are pure functions of one image, ``explain(key, model_fn, image, target, *,
config=..., ...)``; batch them with ``jax.vmap``. ``model_fn`` is a :data:`ModelFn`, a
``jax.tree_util.Partial`` or a plain callable (see :data:`ModelFn` for what each compiles).
Submodules: :mod:`saliency_jax.metrics`, :mod:`saliency_jax.masks`, :mod:`saliency_jax.rl`,
:mod:`saliency_jax.models` (Flax base models and weight import), :mod:`saliency_jax.sharding`
(placing batches and fetching results across devices and processes), :mod:`saliency_jax.testing`
(toy models with known answers). The application (command line, evaluation runner, method
registry, packaged classifiers and agents, plots) is :mod:`saliency_jax.app`; the datasets
are :mod:`saliency_jax.data`. Everything under ``saliency_jax._src`` is private and may move.
"""

__version__ = "0.2.0"

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

# Names load on first use (PEP 562), so that `import saliency_jax` and the command line's
# --help import no JAX; `sj.rise` etc. behave exactly as eager imports.
_SUBMODULES = ("masks", "metrics", "models", "rl", "sharding", "testing")
_FROM = {
    "saliency_jax._src.gradcam": ("GradCamConfig", "cam_from_activations", "gradcam"),
    "saliency_jax._src.iassa": ("IassaConfig", "iassa", "iassa_num_queries", "window_schedule"),
    "saliency_jax._src.lime": ("LimeConfig", "LimeFit", "lime", "lime_fit",
                               "quickshift_segments"),
    "saliency_jax._src.model_fn": ("FeaturesFn", "ModelFn"),
    "saliency_jax._src.occlusion": ("OcclusionConfig", "occlusion"),
    "saliency_jax._src.rexl": ("RexlConfig", "load_rexl_agent", "patch_features", "rexl",
                               "rexl_num_queries", "trajectory_saliency"),
    "saliency_jax._src.rise": ("RiseConfig", "rise", "rise_all_classes", "rise_from_masks"),
    "saliency_jax._src.rise_anytime": ("RiseAnytimeConfig", "RiseAnytimeResult",
                                       "rise_anytime"),
    "saliency_jax._src.rlcam": ("RlcamConfig", "RlcamResult", "load_rlcam_agent", "rlcam",
                                "rlcam_explain", "rlcam_greedy", "rlcam_greedy_explain",
                                "rlcam_mask", "rlcam_num_queries", "train_rlcam"),
    "saliency_jax.models": ("classifier", "features_fn"),
}
_WHERE = {name: (module, name) for module, names in _FROM.items() for name in names}
_WHERE["init_rexl_agent"] = ("saliency_jax._src.rexl", "init_agent")
_WHERE["init_rlcam_agent"] = ("saliency_jax._src.rlcam", "init_agent")


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = _importlib.import_module(f"saliency_jax.{name}")
    elif name in _WHERE:
        module, attr = _WHERE[name]
        value = getattr(_importlib.import_module(module), attr)
    else:
        raise AttributeError(f"module 'saliency_jax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if _TYPE_CHECKING:  # the same names, eagerly, for type checkers
    from saliency_jax import masks, metrics, models, rl, sharding, testing
    from saliency_jax._src.gradcam import GradCamConfig, cam_from_activations, gradcam
    from saliency_jax._src.iassa import IassaConfig, iassa, iassa_num_queries, window_schedule
    from saliency_jax._src.lime import LimeConfig, LimeFit, lime, lime_fit, quickshift_segments
    from saliency_jax._src.model_fn import FeaturesFn, ModelFn
    from saliency_jax._src.occlusion import OcclusionConfig, occlusion
    from saliency_jax._src.rexl import (
        RexlConfig,
        load_rexl_agent,
        patch_features,
        rexl,
        rexl_num_queries,
        trajectory_saliency,
    )
    from saliency_jax._src.rexl import init_agent as init_rexl_agent
    from saliency_jax._src.rise import RiseConfig, rise, rise_all_classes, rise_from_masks
    from saliency_jax._src.rise_anytime import RiseAnytimeConfig, RiseAnytimeResult, rise_anytime
    from saliency_jax._src.rlcam import (
        RlcamConfig,
        RlcamResult,
        load_rlcam_agent,
        rlcam,
        rlcam_explain,
        rlcam_greedy,
        rlcam_greedy_explain,
        rlcam_mask,
        rlcam_num_queries,
        train_rlcam,
    )
    from saliency_jax._src.rlcam import init_agent as init_rlcam_agent
    from saliency_jax.models import classifier, features_fn

__all__ = [
    "FeaturesFn",
    "GradCamConfig",
    "IassaConfig",
    "LimeConfig",
    "LimeFit",
    "ModelFn",
    "OcclusionConfig",
    "RexlConfig",
    "RiseAnytimeConfig",
    "RiseAnytimeResult",
    "RiseConfig",
    "RlcamConfig",
    "RlcamResult",
    "__version__",
    "cam_from_activations",
    "classifier",
    "features_fn",
    "gradcam",
    "iassa",
    "iassa_num_queries",
    "init_rexl_agent",
    "init_rlcam_agent",
    "lime",
    "lime_fit",
    "load_rexl_agent",
    "load_rlcam_agent",
    "masks",
    "metrics",
    "models",
    "occlusion",
    "patch_features",
    "quickshift_segments",
    "rexl",
    "rexl_num_queries",
    "rise",
    "rise_all_classes",
    "rise_anytime",
    "rise_from_masks",
    "rl",
    "rlcam",
    "rlcam_explain",
    "rlcam_greedy",
    "rlcam_greedy_explain",
    "rlcam_mask",
    "rlcam_num_queries",
    "sharding",
    "testing",
    "train_rlcam",
    "trajectory_saliency",
    "window_schedule",
]
