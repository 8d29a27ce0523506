"""The console script end to end: evaluate, explain, convert-weights, and its error messages."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from saliency_jax import models
from saliency_jax.app import cli, methods


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "variables"
    variables = models.init("resnet_small", jax.random.key(0), input_hw=(112, 112), num_classes=6)
    models.save_variables(path, variables, name="resnet_small")
    return str(path)


def test_evaluate_end_to_end(tmp_path, checkpoint, capsys):
    out = tmp_path / "run"
    argv = ["evaluate", "rise", "gradcam", "random", "--checkpoint", checkpoint,
            "--num-images", "2", "--num-masks", "64", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| rise |" in printed and "| gradcam |" in printed and "Pointing ↑" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["gradcam"]["queries"] == 1
    assert (out / "examples.png").exists() and (out / "curves.png").exists()
    # Same arguments again: everything is already done, nothing is recomputed.
    before = (out / "records" / "process-00000.jsonl").read_text()
    assert before.count("\n") == 2 * 3  # images x methods
    assert cli.main(argv) == 0
    assert (out / "records" / "process-00000.jsonl").read_text() == before
    # --merge writes the table again from the records alone.
    (out / "table.md").unlink()
    assert cli.main([*argv, "--merge"]) == 0
    assert "| gradcam |" in (out / "table.md").read_text()


def test_explain_dataset_items_and_image_files(tmp_path, checkpoint):
    out = tmp_path / "maps"
    assert cli.main(["explain", "--dataset", "saliency_shapes", "--indices", "0", "3",
                     "--model", "resnet_small", "--checkpoint", checkpoint,
                     "--num-masks", "32", "--out", str(out)]) == 0
    maps = sorted(p.name for p in out.glob("*.npy"))
    assert maps == ["saliency_shapes-0_rise.npy", "saliency_shapes-3_rise.npy"]
    assert np.load(out / maps[0]).shape == (112, 112)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((50, 70, 3), 128, np.uint8)).save(photo)
    assert cli.main(["explain", str(photo), "--model", "resnet_small", "--checkpoint",
                     checkpoint, "--image-size", "112", "--num-masks", "32", "--method",
                     "occlusion", "--out", str(out)]) == 0
    assert np.load(out / "photo_occlusion.npy").shape == (112, 112)


@pytest.mark.parametrize(
    "argv, message",
    [(["evaluate", "nope", "--no-progress"], "unknown method"),
     (["evaluate", "--model", "resnet9000"], "unknown model"),
     (["evaluate", "--dataset", "nope"], "nope"),
     (["evaluate", "--num-processes", "2"], "--num-processes and --process-id together"),
     (["evaluate", "--coordinator", "127.0.0.1:1"], "--coordinator needs"),
     (["explain", "/no/such/image.png", "--model", "resnet_small"], "image.png"),
     (["explain"], "give image files"),
     (["convert-weights", "--model", "resnet50"], "give the state-dict file")],
)
def test_errors_are_clear(argv, message, checkpoint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders are relative to the working directory
    if argv[0] in ("evaluate", "explain") and "--checkpoint" not in argv and len(argv) > 1:
        argv = [*argv, "--checkpoint", checkpoint]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err.lower() or message in err


def test_unreadable_image(tmp_path, checkpoint, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert cli.main(["explain", str(bad), "--model", "resnet_small", "--checkpoint",
                     checkpoint]) == 2
    assert "bad.jpg" in capsys.readouterr().err


def test_evaluate_skips_unavailable_default_methods_but_not_named_ones(tmp_path, checkpoint,
                                                                      capsys, monkeypatch):
    # The checkpoint is a random classifier: no RExL agent was trained for it.
    monkeypatch.setattr(methods, "DEFAULT_METHODS", ("random", "rexl"))
    out = tmp_path / "run"
    base = ["--checkpoint", checkpoint, "--num-images", "1", "--no-progress"]
    assert cli.main(["evaluate", *base, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    notes = [line for line in printed.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: rexl skipped:")
    assert "| random |" in printed and "| rexl |" not in printed
    assert list(json.loads((out / "results.json").read_text())["summary"]) == ["random"]
    # Named explicitly: an error that says how to get an agent.
    assert cli.main(["evaluate", "rexl", "random", *base, "--out", str(tmp_path / "b")]) == 2
    assert "saliency-jax train-agent --method rexl" in capsys.readouterr().err
