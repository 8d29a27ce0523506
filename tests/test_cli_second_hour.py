"""A user's second hour with the command line: unusable --out refused before any work, the
explained class against the true label, nearly constant maps, the help text, a missing extra,
and a results folder whose table keeps every method."""

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from saliency_jax.app import cli, plots

REPO = pathlib.Path(__file__).resolve().parents[1]


def _cli(*args, cwd, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "saliency_jax.app.cli", *map(str, args)],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - t0


@pytest.mark.parametrize("command", ["explain", "evaluate"])
def test_an_existing_file_as_out_is_refused_before_any_work(tmp_path, command):
    taken = tmp_path / "results.txt"
    taken.write_text("mine")
    extra = ["--dataset", "saliency_shapes"] if command == "explain" else ["random"]
    done, seconds = _cli(command, *extra, "--out", taken, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines == [f"saliency-jax {command}: error: --out {taken} is an existing file, not a "
                     "folder"], done.stderr
    assert taken.read_text() == "mine" and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["explain", "evaluate"])
def test_an_unwritable_out_is_refused_before_any_work(tmp_path, command):
    # /sys refuses new folders even to root (EPERM); a path below a regular file cannot exist.
    below_a_file = tmp_path / "a-file"
    below_a_file.write_text("")
    extra = ["--dataset", "saliency_shapes"] if command == "explain" else ["random"]
    for out in (pathlib.Path("/sys/saliency-jax-test-out"), below_a_file / "maps"):
        done, _ = _cli(command, *extra, "--out", out, cwd=tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"saliency-jax {command}: error: --out {out} cannot be written: ")
        assert not (tmp_path / "runs").exists()


def test_evaluate_help_has_no_doubled_percent(capsys):
    assert cli.main(["evaluate", "--help"]) == 0
    text = capsys.readouterr().out
    assert "i % N == its id" in text and "%%" not in text


def test_the_title_names_the_explained_class_and_the_true_label():
    names = ("disk", "square", "triangle", "star", "cross", "ring")
    differs = cli.explain_title("iassa", 2, 0.81, names, 4)
    assert differs == ("iassa: explained triangle (class 2) (the prediction), p = 0.81\n"
                       "true label: cross (class 4) (differs)")
    same = cli.explain_title("rise", 4, 0.9, names, 4, predicted=False)
    assert same == "rise: explained cross (class 4) (--target), p = 0.90\n= the true label"
    assert cli.explain_title("rise", 281, 0.5, None) == (
        "rise: explained class 281 (the prediction), p = 0.50")


def test_nearly_constant_maps_are_named_not_stretched(tmp_path):
    flat = np.full((8, 8), 0.95) - np.linspace(0, 4e-4, 64).reshape(8, 8)  # 0.9496 to 0.95
    assert plots.nearly_constant(flat)
    assert not plots.nearly_constant(np.linspace(0.66, 0.72, 64).reshape(8, 8))
    assert plots.nearly_constant(np.zeros((4, 4)))
    import matplotlib.pyplot as plt

    seen = {}
    real = plt.Figure.colorbar

    def spy(self, mappable, *args, **kwargs):
        bar = real(self, mappable, *args, **kwargs)
        seen["clim"] = mappable.get_clim()
        original = bar.set_label
        bar.set_label = lambda text, **kw: (seen.setdefault("label", text), original(text, **kw))
        return bar

    plt.Figure.colorbar = spy
    try:
        plots.overlay(tmp_path / "flat.png", np.zeros((8, 8, 3), np.uint8), flat)
    finally:
        plt.Figure.colorbar = real
    assert seen["label"] == "saliency: nearly constant (0.9496 to 0.95)"
    lo, hi = seen["clim"]
    assert hi - lo > 0.9  # the colours span the map's magnitude, not its 4e-4 of noise


def test_a_missing_app_package_names_the_extra(monkeypatch, capsys):
    def needs_tqdm(args):
        raise ModuleNotFoundError("No module named 'tqdm'", name="tqdm")

    monkeypatch.setitem(cli.COMMANDS, "evaluate",
                        (cli.COMMANDS["evaluate"][0], cli.COMMANDS["evaluate"][1],
                         f"{__name__}:_raise_tqdm"))
    monkeypatch.setattr(sys.modules[__name__], "_raise_tqdm", needs_tqdm, raising=False)
    assert cli.main(["evaluate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("saliency-jax evaluate: error: this command needs the 'app' extra "
                   "(missing: tqdm): pip install 'saliency-jax[app]'")


def test_another_missing_module_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise ModuleNotFoundError("No module named 'my_plugin'", name="my_plugin")

    monkeypatch.setitem(cli.COMMANDS, "evaluate",
                        (cli.COMMANDS["evaluate"][0], cli.COMMANDS["evaluate"][1],
                         f"{__name__}:_raise_other"))
    monkeypatch.setattr(sys.modules[__name__], "_raise_other", broken, raising=False)
    with pytest.raises(ModuleNotFoundError, match="my_plugin"):
        cli.main(["evaluate"])


@pytest.mark.slow
def test_explain_on_a_dataset_item_shows_the_true_label(tmp_path):
    # Item 2 of the test split: the packaged resnet_small predicts a triangle on a cross.
    done, _ = _cli("explain", "--dataset", "saliency_shapes", "--indices", "2", "--method",
                   "random", "--out", tmp_path / "maps", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(true label: cross (class 4))" in done.stdout, done.stdout


@pytest.mark.slow
def test_a_subset_run_and_merge_keep_the_folder_table(tmp_path):
    out = tmp_path / "run"
    common = ["--num-images", "1", "--out", out, "--no-progress"]
    done, _ = _cli("evaluate", "random", "gradcam", *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    done, _ = _cli("evaluate", "random", *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    table = (out / "table.md").read_text()
    assert "| gradcam |" in table and "| random |" in table
    assert list(json.loads((out / "results.json").read_text())["summary"]) == [
        "gradcam", "random"]
    done, _ = _cli("evaluate", "--merge", "--out", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| gradcam |" in done.stdout and "| random |" in done.stdout
    assert (out / "table.md").read_text() == table
    done, _ = _cli("evaluate", "--merge", "--out", out, "--seed", "3", cwd=tmp_path)
    assert done.returncode == 2 and "--seed 3 (the folder has 0)" in done.stderr


def test_a_folder_dataset_gets_real_image_defaults_and_a_sane_out_name(tmp_path):
    assert cli.dataset_slug("folder:/data/imagenet/val/") == "folder-val"
    assert cli.dataset_slug("folder:~/my photos") == "folder-my_photos"
    assert cli.dataset_slug("voc/2007") == "voc_2007"
    assert cli.real_images("folder:/x") and cli.real_images("photos")
    assert not cli.real_images("saliency_shapes")
