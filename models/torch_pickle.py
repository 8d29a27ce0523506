"""Reading a PyTorch ``state_dict`` file with numpy alone (no torch), both of torch's formats.

* The zip format (``torch.save`` since 1.6): ``<root>/data.pkl`` pickles the dict; each tensor
  is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` whose storage is a
  persistent id ``("storage", StorageType, key, location, numel)`` with its bytes in
  ``<root>/data/<key>``.
* The legacy format: pickles of the magic number, the protocol version and the system info,
  then the dict (persistent ids as above, ``numel`` in elements), then the list of storage keys,
  then each storage as an 8-byte little-endian element count followed by its bytes.

Like ``torch.load(weights_only=True)``, only the few globals a state dict needs may be named;
any other global is refused with a ValueError naming it, so reading runs no code from the file.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
"""torch storage types -> numpy dtypes (little-endian, as torch writes them)."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(DTYPES[name]).newbyteorder("<")


def _rebuild_tensor(storage, offset, size, stride, *args):
    """``torch._utils._rebuild_tensor_v2``: a strided view of ``storage`` (a 1-d array),
    copied into a contiguous array."""
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[offset])
    needed = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True) if n > 0)
    if min(size) > 0 and needed > storage.size:
        raise ValueError(f"a tensor of size {size}, stride {stride} at offset {offset} overruns "
                         f"its storage of {storage.size} elements")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(s * item for s in stride))
    return np.array(view)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *args):
    return data


class _Pending:
    """A legacy-format tensor whose storage is read after the pickle."""

    def __init__(self, args):
        self.args = args


def _rebuild(storage, offset, size, stride, *args):
    """``_rebuild_tensor_v2``; under the legacy format the storage is still a key (its bytes
    follow the pickle), so the tensor is built once they are read."""
    if isinstance(storage, str):
        return _Pending((storage, offset, size, stride, *args))
    return _rebuild_tensor(storage, offset, size, stride, *args)


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild,
    ("torch._utils", "_rebuild_tensor"): _rebuild,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in DTYPES},
}
"""The globals a state dict may name (module, name) -> what stands in for them."""


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise ValueError(f"the file names the global {module}.{name}, which a state dict "
                             "does not need; refusing to load it") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise ValueError(f"unexpected persistent id {pid!r:.80}")
        return self._load_storage(pid[1], str(pid[2]), int(pid[4]))


def _read_zip(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        (pkl,) = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        root = pkl[: -len("data.pkl")]

        def load_storage(kind, key, numel):
            data = archive.read(f"{root}data/{key}")
            return np.frombuffer(data, dtype=kind.dtype, count=numel)

        return _Unpickler(io.BytesIO(archive.read(pkl)), load_storage).load()


def _read_legacy(path) -> dict:
    kinds = {}

    def load_storage(kind, key, numel):
        kinds[key] = kind
        return key  # resolved once the storages, which follow the pickles, are read

    with open(path, "rb") as f:
        unpickler = _Unpickler(f, load_storage)  # one reader: it may buffer ahead in the file
        if unpickler.load() != LEGACY_MAGIC:
            raise ValueError(f"{path} is not a torch file (no zip archive, no legacy magic)")
        unpickler.load()  # protocol version
        unpickler.load()  # system info: endianness, type sizes
        tree = unpickler.load()
        keys = unpickler.load()
        storages = {}
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            kind = kinds[str(key)]
            data = f.read(count * kind.dtype.itemsize)
            if len(data) != count * kind.dtype.itemsize:
                raise ValueError(f"{path} ends inside storage {key}")
            storages[str(key)] = np.frombuffer(data, dtype=kind.dtype, count=count)
    return _resolve(tree, storages)


def _resolve(tree, storages):
    if isinstance(tree, _Pending):
        key, *rest = tree.args
        return _rebuild_tensor(storages[key], *rest)
    if isinstance(tree, dict):
        return type(tree)((k, _resolve(v, storages)) for k, v in tree.items())
    return tree


def load(path) -> dict:
    """The pickled object of a torch file (a state dict: name -> numpy array), without torch.

    Floating tensors keep their dtype here (``models.weights`` casts them). ValueError for a
    file that is neither format, or that names any global a state dict does not need."""
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    return _read_legacy(path)
