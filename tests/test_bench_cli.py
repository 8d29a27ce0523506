"""``saliency-jax bench`` (``saliency_jax.app.bench``): argument parsing without JAX, bad
values, and one real run on a small model."""

import argparse
import ast
import json
from pathlib import Path

import pytest

from saliency_jax.app import bench


def test_the_module_imports_no_jax_at_import_time():
    # The CLI builds its parser from add_arguments before any JAX work: only the functions
    # that measure may import JAX (importing the package itself is the CLI's business).
    tree = ast.parse(Path(bench.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in top if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m.split(".")[0] in ("jax", "jaxlib", "flax", "saliency_jax")]


@pytest.mark.parametrize("flag", ["--num-masks", "--batch-size", "--repeats", "--grid"])
def test_bad_counts_exit_2(flag, capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    with pytest.raises(SystemExit) as exit_:  # refused while parsing, naming the option
        parser.parse_args([flag, "0"])
    assert exit_.value.code == 2
    assert flag in capsys.readouterr().err
    namespace = parser.parse_args([])
    setattr(namespace, flag[2:].replace("-", "_"), 0)  # a caller of run() past the parser
    assert bench.run(namespace) == 2
    assert flag in capsys.readouterr().err


def test_unknown_model_exits_2(capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.run(parser.parse_args(["--model", "nope"])) == 2
    assert "unknown model" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_reports_throughput_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench.main(["--model", "resnet_small", "--size", "96", "--num-masks", "8",
                       "--batch-size", "4", "--repeats", "2", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "RISE ÷ bare forward" in out and "cpu" in out.lower()
    result = json.loads(path.read_text())
    for name in ("bare_forward", "rise"):
        r = result[name]
        assert len(r["runs_s"]) == 2 and r["steady_s"] > 0 and r["compile_s"] > 0
        assert r["masks_per_s"] == pytest.approx(8 / r["steady_s"])
        assert r["flops"] is None or r["flops"] > 0
    assert result["rise_over_bare"] == pytest.approx(
        result["rise"]["steady_s"] / result["bare_forward"]["steady_s"])
