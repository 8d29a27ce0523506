"""Weight import (torch ``state_dict`` -> Flax ``variables``) and orbax checkpoints.

Reading::

    read_state_dict(path) -> {torch key: np.ndarray}      # .safetensors (no torch) or .pth/.pt
    convert_state_dict(name, state_dict) -> variables      # via the spec's ``torch_to_flax``
    convert_file(src, dst, *, name) -> variables           # read + convert + save_variables

Checkpoints (an orbax composite checkpoint: item ``variables`` plus a JSON item ``model``
holding the model name and number of classes, checked on load)::

    save_variables(path, variables, *, name, num_classes=None)
    load_variables(path, *, name=None) -> variables
    checkpoint_info(path) -> {"model": str, "num_classes": int, ...}

Mapping helpers shared by the architectures (``resnet``, ``vgg``, ``efficientnet``): a Flax
module's variables, in creation order, define the torch layout it expects::

    flax  params/<module>/kernel  HWIO  <-  torch <prefix>.weight  OIHW  (conv; depthwise too)
    flax  params/<module>/kernel  (in, out) <- torch <prefix>.weight (out, in)   (Linear)
    flax  params/<module>/bias              <- torch <prefix>.bias
    flax  params/<module>/scale             <- torch <prefix>.weight              (BatchNorm)
    flax  batch_stats/<module>/mean, var    <- torch <prefix>.running_mean, running_var
    torch <prefix>.num_batches_tracked: accepted and ignored (BatchNorm modules only)

where ``<prefix>`` is ``torch_prefix(module path)``; the default joins the Flax module names
with ``.`` after turning a trailing ``_<digits>`` into ``.<digits>`` (``layer1_0`` ->
``layer1.0``, ``features_28`` -> ``features.28``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

_FORMAT = "saliency-jax variables v1"
_MAX_LISTED = 25


class WeightsFileNotFoundError(FileNotFoundError, ValueError):
    """A weight or checkpoint path that does not exist (both a ``FileNotFoundError`` and a
    ``ValueError``)."""


# ---------------------------------------------------------------------------------------------
# Reading torch state dicts


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Reads a torch ``state_dict`` as ``{key: np.ndarray}`` (floating tensors as float32).

    ``.safetensors`` files are read with ``safetensors.numpy`` (no torch needed); ``.pth``,
    ``.pt`` and ``.bin`` with ``torch.load(weights_only=True)``, which needs the ``torch`` extra.
    A pickled dict holding the state dict under ``"state_dict"`` or ``"model"`` is unwrapped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsFileNotFoundError(f"weights file not found: {path!r}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
        try:
            import safetensors.numpy
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                f"reading {path!r} needs safetensors: pip install safetensors (or pip install "
                "'saliency-jax[app]')", name="safetensors") from None
        state = safetensors.numpy.load_file(path)
        return {k: _as_float32(v) for k, v in state.items()}
    if suffix in (".pth", ".pt", ".bin"):
        return _read_torch_pickle(path)
    raise ValueError(
        f"unsupported weights file {path!r}: accepted suffixes are .safetensors, .pth, .pt, .bin"
    )


def _as_float32(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v)
    return v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v


def _read_torch_pickle(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:  # numpy alone reads a plain state dict (models.torch_pickle)
        return _read_without_torch(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad pickle
        raise ValueError(f"could not read {path!r} as a torch state_dict: {e}") from e
    if isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(
            f"{path!r} does not hold a state_dict (a dict of tensors); got {type(obj).__name__}"
        )
    out = {}
    for k, t in obj.items():
        t = t.detach().cpu()
        out[str(k)] = t.float().numpy() if t.is_floating_point() else t.numpy()
    return out


def _read_without_torch(path: str) -> dict[str, np.ndarray]:
    from . import torch_pickle

    try:
        obj = torch_pickle.load(path)
    except Exception as e:  # noqa: BLE001 - a damaged pickle raises many types
        raise ValueError(f"could not read {path!r} as a torch state_dict without PyTorch: {e} "
                         "(numpy alone reads plain state dicts; pip install "
                         "'saliency-jax[torch]' reads any torch file)") from e
    if isinstance(obj, Mapping) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ValueError(
            f"{path!r} does not hold a state_dict (a dict of tensors); got {type(obj).__name__}")
    return {str(k): _as_float32(v) for k, v in obj.items()}


# ---------------------------------------------------------------------------------------------
# Mapping helpers


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """torch conv weight ``OIHW`` (depthwise: ``(C, 1, kh, kw)``) -> Flax kernel ``HWIO``."""
    return np.transpose(weight, (2, 3, 1, 0))


def linear_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Linear weight ``(out, in)`` -> Flax Dense kernel ``(in, out)``."""
    return np.transpose(weight)


def default_torch_prefix(module_path: tuple[str, ...]) -> str:
    """``("layer1_0", "downsample_1")`` -> ``"layer1.0.downsample.1"``."""
    return ".".join(re.sub(r"_(\d+)$", r".\1", name) for name in module_path)


_PARAM_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_STAT_TO_TORCH = {"mean": "running_mean", "var": "running_var"}


def _to_torch_shape(flax_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if flax_name == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if flax_name == "kernel" and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _to_flax(flax_name: str, value: np.ndarray) -> np.ndarray:
    if flax_name == "kernel" and value.ndim == 4:
        return conv_kernel(value)
    if flax_name == "kernel" and value.ndim == 2:
        return linear_kernel(value)
    return value


def module_variable_shapes(module, input_hw, **init_kwargs) -> dict:
    """A Linen module's variables as ``jax.ShapeDtypeStruct`` s, in creation order (which is
    torch's ``state_dict`` order for a faithful port), without computing anything.

    ``init_kwargs`` default to ``train=False``.
    """
    init_kwargs = {"train": False, **init_kwargs}
    captured = {}

    def init(x):
        variables = module.init(jax.random.key(0), x, **init_kwargs)
        captured["tree"] = _shapes_in_order(variables)  # jax.tree.map would sort the keys
        return variables

    jax.eval_shape(init, jax.ShapeDtypeStruct((1, *input_hw, 3), jnp.float32))
    return captured["tree"]


def _shapes_in_order(tree):
    if isinstance(tree, Mapping):
        return {k: _shapes_in_order(v) for k, v in tree.items()}
    return jax.ShapeDtypeStruct(tree.shape, tree.dtype)


def _walk(tree: Mapping, path: tuple[str, ...] = ()):
    """Yields ``(module path, leaf name, leaf)`` in insertion (= creation) order."""
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _walk(v, (*path, k))
        else:
            yield path, k, v


class _Entry:
    __slots__ = ("collection", "module", "leaf", "torch_key", "torch_shape", "flax_shape")

    def __init__(self, collection, module, leaf, torch_key, torch_shape, flax_shape):
        self.collection, self.module, self.leaf = collection, module, leaf
        self.torch_key, self.torch_shape, self.flax_shape = torch_key, torch_shape, flax_shape


def _entries(variable_shapes: Mapping, torch_prefix) -> tuple[list[_Entry], list[str]]:
    """The torch keys a Flax variable tree expects, in module creation order, and the optional
    ``num_batches_tracked`` keys of its BatchNorm modules."""
    by_module: dict[tuple[str, ...], list[_Entry]] = {}
    bn_modules = []
    for collection, names in (("params", _PARAM_TO_TORCH), ("batch_stats", _STAT_TO_TORCH)):
        for module, leaf, value in _walk(variable_shapes.get(collection, {})):
            if leaf not in names:
                raise ValueError(f"no torch name for Flax variable {collection}/{module}/{leaf}")
            shape = tuple(value.shape)
            key = f"{torch_prefix(module)}.{names[leaf]}"
            by_module.setdefault(module, []).append(
                _Entry(collection, module, leaf, key, _to_torch_shape(leaf, shape), shape)
            )
            if collection == "batch_stats" and leaf == "mean":
                bn_modules.append(module)
    entries = [e for group in by_module.values() for e in group]
    optional = [f"{torch_prefix(m)}.num_batches_tracked" for m in bn_modules]
    return entries, optional


def torch_layout_of(
    variable_shapes: Mapping, *, torch_prefix: Callable = default_torch_prefix
) -> list[tuple[str, tuple[int, ...]]]:
    """``[(torch key, torch shape)]`` that ``convert_torch`` expects for these Flax variables,
    in module creation order, with each BatchNorm's ``num_batches_tracked`` (shape ``()``)
    after its ``running_var`` as in torch's ``state_dict``."""
    entries, _ = _entries(variable_shapes, torch_prefix)
    out = []
    for e in entries:
        out.append((e.torch_key, e.torch_shape))
        if e.collection == "batch_stats" and e.leaf == "var":
            out.append((e.torch_key[: -len("running_var")] + "num_batches_tracked", ()))
    return out


def convert_torch(
    state_dict: Mapping[str, np.ndarray],
    variable_shapes: Mapping,
    *,
    torch_prefix: Callable = default_torch_prefix,
    model: str = "model",
) -> dict:
    """Maps a torch ``state_dict`` onto Flax ``variables`` shaped like ``variable_shapes``.

    ``variable_shapes`` is the module's variable tree (e.g. from ``jax.eval_shape`` of its init,
    insertion-ordered); see the module docstring for the name mapping. Raises ``ValueError``
    listing every missing, unexpected and mis-shaped key (expected vs got torch shapes).
    """
    entries, optional = _entries(variable_shapes, torch_prefix)
    expected = {e.torch_key for e in entries}
    missing = [e.torch_key for e in entries if e.torch_key not in state_dict]
    unexpected = [k for k in state_dict if k not in expected and k not in set(optional)]
    misshaped = [
        f"{e.torch_key}: expected {e.torch_shape}, got {tuple(np.shape(state_dict[e.torch_key]))}"
        for e in entries
        if e.torch_key in state_dict and tuple(np.shape(state_dict[e.torch_key])) != e.torch_shape
    ]
    if missing or unexpected or misshaped:
        parts = [f"state_dict does not match {model}:"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
        ):
            if items:
                listed = ", ".join(items[:_MAX_LISTED])
                more = (
                    f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
                )
                parts.append(f"{len(items)} {title}: {listed}{more}")
        raise ValueError("\n  ".join(parts))
    variables: dict = {}
    for e in entries:
        value = np.asarray(state_dict[e.torch_key])
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"{e.torch_key} must be a floating tensor, got dtype {value.dtype}")
        node = variables.setdefault(e.collection, {})
        for name in e.module:
            node = node.setdefault(name, {})
        node[e.leaf] = jnp.asarray(_to_flax(e.leaf, value.astype(np.float32)))
    return variables


# ---------------------------------------------------------------------------------------------
# Registry-level entry points


def torch_layout(name: str, *, num_classes: int | None = None) -> list[tuple[str, tuple]]:
    """The torchvision-style ``[(key, shape)]`` layout that ``convert_state_dict(name, .)``
    accepts, in torch ``state_dict`` order (``num_batches_tracked`` included)."""
    from . import registry

    spec = registry.get(name, num_classes=num_classes)
    return torch_layout_of(registry.variable_shapes(spec.name, spec.num_classes))


def convert_state_dict(
    name: str, state_dict: Mapping[str, np.ndarray], *, num_classes: int | None = None
) -> dict:
    """Converts a torch ``state_dict`` (numpy arrays) to the Flax ``variables`` of ``name``.

    Raises ``ValueError`` listing missing, unexpected and mis-shaped keys.
    """
    from . import registry

    spec = registry.get(name, num_classes=num_classes)
    if spec.torch_to_flax is None:
        raise ValueError(f"model {name!r} has no torch weight converter")
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a mapping of key -> array, got {type(state_dict)}")
    return spec.torch_to_flax(state_dict)


def convert_file(
    src, dst, *, name: str, num_classes: int | None = None, overwrite: bool = False
) -> dict:
    """``read_state_dict(src)`` -> ``convert_state_dict`` -> ``save_variables(dst)``; returns the
    variables."""
    dst_abs = os.path.abspath(os.fspath(dst))
    if os.path.exists(dst_abs) and not overwrite:  # fail before the slow part
        raise ValueError(f"checkpoint path {dst_abs!r} already exists; pass overwrite=True")
    variables = convert_state_dict(name, read_state_dict(src), num_classes=num_classes)
    save_variables(dst, variables, name=name, num_classes=num_classes, overwrite=overwrite)
    return variables


# ---------------------------------------------------------------------------------------------
# Orbax checkpoints


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp, ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save_variables(
    path, variables, *, name: str, num_classes: int | None = None, overwrite: bool = False
) -> None:
    """Writes ``variables`` of model ``name`` as an orbax checkpoint directory at ``path``.

    The variables are checked against the model's expected shapes first (``ValueError`` listing
    the differences). ``num_classes`` defaults to the head size the variables hold; it is stored
    with the model name and checked by :func:`load_variables`.
    """
    from . import registry

    spec = registry.spec_for(name, variables, num_classes=num_classes)
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"checkpoint path {path!r} already exists; pass overwrite=True")
    ocp, ckptr = _checkpointer()
    meta = {"format": _FORMAT, "model": spec.name, "num_classes": spec.num_classes}
    ckptr.save(
        path,
        args=ocp.args.Composite(
            variables=ocp.args.StandardSave(jax.tree.map(np.asarray, variables)),
            model=ocp.args.JsonSave(meta),
        ),
        force=overwrite,
    )


def checkpoint_info(path) -> dict:
    """The JSON ``model`` item of a checkpoint written by :func:`save_variables`:
    ``{"format", "model", "num_classes"}``."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise WeightsFileNotFoundError(f"checkpoint not found: {path!r}")
    ocp, ckptr = _checkpointer()
    try:
        meta = ckptr.restore(path, args=ocp.args.Composite(model=ocp.args.JsonRestore()))["model"]
    except Exception as e:  # noqa: BLE001 - orbax raises several types for a foreign directory
        raise ValueError(
            f"{path!r} is not a saliency-jax model checkpoint (no readable 'model' item; "
            f"write checkpoints with models.weights.save_variables): {e}"
        ) from e
    if not isinstance(meta, Mapping) or meta.get("format") != _FORMAT:
        raise ValueError(f"{path!r} is not a saliency-jax model checkpoint (format {meta!r})")
    return dict(meta)


def load_variables(path, *, name: str | None = None) -> dict:
    """Reads variables written by :func:`save_variables`.

    With ``name``, raises ``ValueError`` when the checkpoint holds another model. The number of
    classes it was saved with is in :func:`checkpoint_info`; ``models.classifier`` reads it off
    the variables.
    """
    meta = checkpoint_info(path)
    if name is not None and meta["model"] != name:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} holds model {meta['model']!r} "
            f"({meta['num_classes']} classes), not {name!r}"
        )
    ocp, ckptr = _checkpointer()
    restored = ckptr.restore(
        os.path.abspath(os.fspath(path)),
        args=ocp.args.Composite(variables=ocp.args.StandardRestore()),
    )
    return jax.tree.map(jnp.asarray, dict(restored["variables"]))
