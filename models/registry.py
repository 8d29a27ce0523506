"""The model registry and the functional boundary between Flax modules and ``ModelFn`` s.

::

    available() -> tuple[str, ...]
    get(name, *, num_classes=None) -> ModelSpec
    init(name, key, *, input_hw=None, num_classes=None) -> variables
    classifier(name, variables, *, num_classes=None, dtype=None) -> ModelFn   # images -> probs
    logits_fn(name, variables, *, num_classes=None, dtype=None) -> ModelFn    # images -> logits
    features_fn(name, variables, *, names=None, num_classes=None, dtype=None) # -> {stage: feats}

The returned functions are ``jax.tree_util.Partial(apply_fn, variables, mean_rgb=f32[3],
std_rgb=f32[3])``: the weights and the normalisation are traced leaves and ``apply_fn`` is one
cached Python object per (name, number of classes, output), so a jitted function taking the
Partial as an argument reuses its executable when given new weights.

Number of classes: every registered architecture takes a head of any size.
``get("resnet_small", num_classes=6)`` is that architecture with a 6-way head. Elsewhere
``num_classes=None`` means "the registry default, or whatever ``variables`` hold": given
variables trained with another class count, the count is read off the head's shape.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from . import efficientnet, resnet, vgg, weights
from .spec import ModelSpec


def _collect() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for module in (resnet, vgg, efficientnet):
        for name, spec in module.SPECS.items():
            if name in specs:
                raise RuntimeError(f"model name {name!r} is registered twice")
            specs[name] = spec
    return specs


_SPECS = _collect()


def available() -> tuple[str, ...]:
    """The registered model names, sorted."""
    return tuple(sorted(_SPECS))


def get(name: str, *, num_classes: int | None = None) -> ModelSpec:
    """The spec of ``name``, with a ``num_classes``-way head when given."""
    if not isinstance(name, str) or name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; accepted names: {', '.join(available())}")
    if num_classes is not None and (
        not isinstance(num_classes, (int, np.integer))
        or isinstance(num_classes, bool)
        or num_classes < 1
    ):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return _get(name, None if num_classes is None else int(num_classes))


@functools.cache
def _get(name: str, num_classes: int | None) -> ModelSpec:
    spec = _SPECS[name]
    if num_classes is None or num_classes == spec.num_classes:
        return spec
    if spec.with_num_classes is None:
        raise ValueError(f"model {name!r} has a fixed number of classes ({spec.num_classes})")
    return spec.with_num_classes(num_classes)


@functools.cache
def _module(name, num_classes):
    return _get(name, num_classes).build()


@functools.cache
def variable_shapes(name: str, num_classes: int) -> dict:
    """The variables of ``name`` as ``jax.ShapeDtypeStruct`` s (creation order; no compute)."""
    spec = _get(name, num_classes)
    return weights.module_variable_shapes(_module(name, num_classes), spec.input_hw)


def _flat(tree) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(v)) for path, v in leaves
    }


def _mismatches(expected: dict, variables) -> list[str]:
    want, got = _flat(expected), _flat(variables)
    out = [f"missing {k} {s}" for k, s in want.items() if k not in got]
    out += [f"unexpected {k}" for k in got if k not in want]
    out += [
        f"{k}: expected shape {s}, got {got[k]}"
        for k, s in want.items()
        if k in got and got[k] != s
    ]
    return out


def _infer_num_classes(name: str, variables) -> int | None:
    """Reads the head size off ``variables``: the one axis that differs between 1 and 2 classes."""
    one, two = _flat(variable_shapes(name, 1)), _flat(variable_shapes(name, 2))
    got = _flat(variables)
    for path, s1 in one.items():
        s2 = two.get(path)
        if s2 != s1 and path in got and len(got[path]) == len(s1):
            axis = next(i for i, (a, b) in enumerate(zip(s1, s2, strict=True)) if a != b)
            return got[path][axis]
    return None


def check_variables(name: str, num_classes: int, variables) -> None:
    """``ValueError`` listing every missing, unexpected and mis-shaped variable."""
    if not isinstance(variables, Mapping):
        raise ValueError(
            f"variables must be a mapping (Flax variables, e.g. from models.init), "
            f"got {type(variables).__name__}"
        )
    problems = _mismatches(variable_shapes(name, num_classes), variables)
    if problems:
        listed = "; ".join(problems[:20])
        more = f"; ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(
            f"variables do not match model {name!r} with {num_classes} classes: {listed}{more}"
        )


def spec_for(name: str, variables, *, num_classes: int | None = None) -> ModelSpec:
    """The spec of ``name`` that ``variables`` fit, with the class count read off the variables
    when not given; ``ValueError`` listing the differences when they do not fit."""
    spec = get(name, num_classes=num_classes)
    if (
        num_classes is None
        and spec.with_num_classes is not None
        and isinstance(variables, Mapping)
        and _mismatches(variable_shapes(name, spec.num_classes), variables)
    ):
        inferred = _infer_num_classes(name, variables)
        if inferred is not None and inferred >= 1:
            spec = get(name, num_classes=inferred)
    check_variables(spec.name, spec.num_classes, variables)
    return spec


def init(name: str, key, *, input_hw: tuple[int, int] | None = None, num_classes=None) -> dict:
    """Random variables for ``name`` (torchvision's initialisers), from one compiled init."""
    spec = get(name, num_classes=num_classes)
    hw = spec.input_hw if input_hw is None else input_hw
    if len(tuple(hw)) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in hw):
        raise ValueError(f"input_hw must be two positive integers (h, w), got {input_hw!r}")
    x = jnp.zeros((1, *hw, 3), jnp.float32)
    if isinstance(key, jax.core.Tracer):  # inside the caller's jit / eval_shape: no nested jit
        return _module(spec.name, spec.num_classes).init(key, x, train=False)
    return _init_fn(spec.name, spec.num_classes)(key, x)


@functools.cache
def _init_fn(name, num_classes):
    # XLA:CPU spends most of an init's compile time optimising the per-parameter RNG code; at
    # optimisation level 0 small models compile ~5x faster (resnet_small 10 s -> 2 s of CPU,
    # ResNet50 15 s -> 9 s including the run) while huge ones (VGG16) then run slower.
    n_params = sum(
        int(np.prod(v.shape)) for v in jax.tree.leaves(variable_shapes(name, num_classes))
    )
    options = {"xla_backend_optimization_level": 0} if n_params < 50_000_000 else None
    return jax.jit(
        functools.partial(_module(name, num_classes).init, train=False), compiler_options=options
    )


def _check_images(images) -> None:
    shape = np.shape(images)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"images must have shape (batch, height, width, 3) (NHWC, RGB), got shape {shape}; "
            "add a batch axis with images[None]"
        )
    dtype = images.dtype if hasattr(images, "dtype") else np.result_type(images)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"images must be a float array in [0, 1], got dtype {dtype}; "
            "convert uint8 images with images.astype(np.float32) / 255"
        )


def _normalise(images, mean_rgb, std_rgb):
    _check_images(images)
    images = jnp.asarray(images)
    return (images - jnp.reshape(mean_rgb, (1, 1, 1, 3))) / jnp.reshape(std_rgb, (1, 1, 1, 3))


_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _check_dtype(dtype) -> str | None:
    """The compute dtype's name, ``None`` for float32 (the default, no casts compiled in)."""
    if dtype is None:
        return None
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise ValueError(f"dtype must be None, float32, bfloat16 or float16, got {dtype!r}")
    return None if name == "float32" else name


def _cast(tree, dtype):
    """Floating leaves of ``tree`` cast to ``dtype`` (integer leaves, e.g. counters, kept)."""
    return jax.tree.map(
        lambda v: v.astype(dtype) if jnp.issubdtype(jnp.result_type(v), jnp.floating) else v,
        tree)


@functools.cache
def _apply_fn(name: str, num_classes: int, output: str, names: tuple[str, ...] | None = None,
              dtype: str | None = None):
    module = _module(name, num_classes)
    compute = _DTYPES[dtype] if dtype is not None else None

    def run(variables, images, mean_rgb, std_rgb, **kwargs):
        x = _normalise(images, mean_rgb, std_rgb)
        if compute is not None:  # weights and activations in ``compute``; outputs float32
            variables, x = _cast(variables, compute), x.astype(compute)
        out = module.apply(variables, x, train=False, **kwargs)
        return _cast(out, jnp.float32) if compute is not None else out

    def probabilities(variables, images, *, mean_rgb, std_rgb):
        return jax.nn.softmax(run(variables, images, mean_rgb, std_rgb), axis=-1)

    def logits(variables, images, *, mean_rgb, std_rgb):
        return run(variables, images, mean_rgb, std_rgb)

    def features(variables, images, *, mean_rgb, std_rgb):
        _, feats = run(variables, images, mean_rgb, std_rgb, features=True)
        return {n: feats[n] for n in names}

    fn = {"probabilities": probabilities, "logits": logits, "features": features}[output]
    suffix = "" if dtype is None else f"_{dtype}"
    fn.__qualname__ = fn.__name__ = f"{name}_{num_classes}_{output}{suffix}"
    return fn


def _partial(spec: ModelSpec, output: str, variables, names=None,
             dtype=None) -> jax.tree_util.Partial:
    return jax.tree_util.Partial(
        _apply_fn(spec.name, spec.num_classes, output, names, _check_dtype(dtype)),
        variables,
        mean_rgb=jnp.asarray(spec.mean_rgb, jnp.float32),
        std_rgb=jnp.asarray(spec.std_rgb, jnp.float32),
    )


def classifier(name: str, variables, *, num_classes: int | None = None, dtype=None):
    """``ModelFn``: images ``f32[b, h, w, 3]`` in [0, 1] -> softmax probabilities ``f32[b, k]``.

    ``dtype``: the compute dtype, ``None``/``float32`` (default), ``bfloat16`` or ``float16``:
    weights and activations are cast to it inside the call (the variables stay float32), the
    logits come back as float32 and the softmax, and any saliency accumulated from the scores,
    is float32. Mixed precision is for GPUs and TPUs; on a CPU without native bf16 it is slower
    (``benchmarks/results/mixed_precision.json``).
    """
    return _partial(spec_for(name, variables, num_classes=num_classes), "probabilities",
                    variables, dtype=dtype)


def logits_fn(name: str, variables, *, num_classes: int | None = None, dtype=None):
    """Images ``f32[b, h, w, 3]`` in [0, 1] -> logits ``f32[b, k]`` (for gradient methods);
    ``dtype`` as in :func:`classifier`."""
    return _partial(spec_for(name, variables, num_classes=num_classes), "logits", variables,
                    dtype=dtype)


def features_fn(name: str, variables, *, names=None, num_classes: int | None = None,
                dtype=None):
    """Images ``f32[b, h, w, 3]`` in [0, 1] -> ``{stage name: f32[b, h_s, w_s, c_s]}``.

    ``names`` (default: all of ``get(name).feature_names``) selects the stages returned;
    ``dtype`` as in :func:`classifier` (features come back as float32).
    """
    spec = spec_for(name, variables, num_classes=num_classes)
    if names is None:
        names = spec.feature_names
    elif isinstance(names, str):
        names = (names,)
    names = tuple(names)
    unknown = [n for n in names if n not in spec.feature_names]
    if unknown or not names:
        raise ValueError(
            f"names must be a non-empty subset of {name!r}'s features "
            f"{', '.join(spec.feature_names)}; got {list(names)}"
        )
    return _partial(spec, "features", variables, names, dtype=dtype)
