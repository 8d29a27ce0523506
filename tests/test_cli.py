"""The console script end to end: evaluate, explain, convert-weights, and its error messages."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

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
                     "--num-masks", "32", "--out", str(out), "--no-progress"]) == 0
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


REPO = pathlib.Path(__file__).resolve().parents[1]


def test_parser_names_match_the_registries():
    from saliency_jax.data import readers

    assert tuple(methods.FACTORIES) == cli.METHOD_NAMES
    assert cli.DEFAULT_METHOD_NAMES == methods.DEFAULT_METHODS
    assert tuple(readers._DEFAULT_SPLITS) == cli.DATASET_NAMES


def test_help_is_complete():
    parser = cli.build_parser()
    assert "``" not in parser.description and "examples:" in parser.epilog
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"evaluate", "explain", "train-classifier", "train-agent",
                                "convert-weights"}
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            default = action.default
            if action.option_strings and default not in (None, False, [], "==SUPPRESS=="):
                # A default is stated (argparse's %(default)s or the text itself).
                assert ("%(default)s" in action.help or str(default) in action.help
                        or "default" in action.help), (name, action.dest)


def test_parsing_imports_no_jax():
    """--help and a refused value run without importing JAX (or the method registry): the
    package's own __init__ is bypassed here, so this checks the CLI layer itself."""
    code = f"""
import sys, types
pkg = types.ModuleType("saliency_jax"); pkg.__path__ = [{str(REPO / "saliency_jax")!r}]
sys.modules["saliency_jax"] = pkg
from saliency_jax.app import cli
rc = [cli.main([c, "--help"]) for c in ("evaluate", "explain", "train-agent")]
rc.append(cli.main(["evaluate", "--num-masks", "0"]))
heavy = [m for m in ("jax", "numpy", "saliency_jax.app.methods", "matplotlib") if m in sys.modules]
print(rc, heavy)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[0, 0, 0, 2] []"


@pytest.mark.parametrize(
    "argv, message",
    [(["evaluate", "--num-masks", "0"], "argument --num-masks: must be an integer >= 1, got '0'"),
     (["evaluate", "--image-size", "0"], "argument --image-size: must be an integer >= 16"),
     (["evaluate", "--num-images", "0"], "argument --num-images: must be an integer >= 1"),
     (["evaluate", "--batch-size", "-2"], "argument --batch-size: must be an integer >= 1"),
     (["evaluate", "--seed", "x"], "argument --seed: must be an integer >= 0, got 'x'"),
     (["explain", "--dataset", "saliency_shapes", "--indices", "-1"],
      "argument --indices: must be an integer >= 0, got '-1'"),
     (["explain", "a.png", "--num-masks", "0"], "argument --num-masks"),
     (["explain", "a.png", "--method", "nope"], "argument --method: invalid choice: 'nope'"),
     (["train-classifier", "--out", "x", "--steps", "0"], "argument --steps"),
     (["train-classifier", "--out", "x", "--learning-rate", "0"],
      "argument --learning-rate: must be a finite number > 0"),
     (["train-agent", "--method", "rexl", "--updates", "0"], "argument --updates")],
)
def test_out_of_range_values_are_refused_by_name(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_dataset_index_and_target_out_of_range(tmp_path, checkpoint, capsys):
    base = ["explain", "--dataset", "saliency_shapes", "--checkpoint", checkpoint, "--out",
            str(tmp_path), "--no-progress"]
    assert cli.main([*base, "--indices", "0", "100000"]) == 2
    err = capsys.readouterr().err
    assert "--indices 100000 is out of range: saliency_shapes" in err and "0 to 599" in err
    assert cli.main([*base, "--target", "6"]) == 2
    assert "--target 6 is out of range: resnet_small has 6 classes, 0 to 5" in \
        capsys.readouterr().err


def test_truncated_checkpoint_is_a_clear_error(tmp_path, checkpoint, capsys):
    import shutil

    damaged = tmp_path / "variables"
    shutil.copytree(checkpoint, damaged)
    biggest = max((p for p in damaged.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as f:
        f.truncate(biggest.stat().st_size // 2)
    assert cli.main(["evaluate", "random", "--checkpoint", str(damaged), "--num-images", "1",
                     "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint {damaged} cannot be read" in err and "truncated" in err
    assert len(err.strip().splitlines()) == 1


def test_explain_figure_keeps_the_aspect_ratio_and_names_the_class(tmp_path, checkpoint,
                                                                  capsys):
    photo = tmp_path / "wide.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 150, 3), np.uint8)).save(photo)
    out = tmp_path / "maps"
    assert cli.main(["explain", str(photo), "--model", "resnet_small", "--checkpoint",
                     checkpoint, "--image-size", "112", "--method", "occlusion", "--out",
                     str(out)]) == 0
    captured = capsys.readouterr()
    from saliency_jax.data import shapes

    assert any(f"{name} (class " in captured.out for name in shapes.CLASS_NAMES)
    assert "estimate: occlusion makes" in captured.err and "images/s" in captured.err
    with Image.open(out / "wide_occlusion.png") as im:
        width, height = im.size
    assert height >= 200  # a readable size: the image alone is 6 inches wide at 100 dpi
    assert 2.0 < width / height < 3.5  # 150 x 60 (2.5) plus the colour bar, not a square


def test_rise_gets_the_chunk_progress_when_it_takes_it(monkeypatch):
    from saliency_jax._src import rise as rise_module

    ctx = methods.ModelContext("resnet_small", {}, (112, 112))
    (method,) = methods.build_methods(["rise"], ctx, num_masks=300)
    calls = []

    def rise_with_progress(key, model_fn, image, target, *, config, progress=None):
        calls.append((config.num_masks, config.grid, config.p_keep, progress))
        return "map"

    def rise_without(key, model_fn, image, target, *, config):
        return "map"

    monkeypatch.setattr(rise_module, "rise", rise_without)
    assert cli._rise_with_progress(method, print) is None
    monkeypatch.setattr(rise_module, "rise", rise_with_progress)
    explain = cli._rise_with_progress(method, print)
    assert explain(None, None, None, None) == "map" and calls == [(300, 7, 0.5, print)]
    (other,) = methods.build_methods(["occlusion"], ctx)
    assert cli._rise_with_progress(other, print) is None


@pytest.mark.parametrize("command, extra, kept", [
    ("evaluate", [], "image x method records are kept in"),
    ("train-classifier", ["--out", "tc"], "no checkpoint was written yet"),
    ("train-agent", ["--method", "rexl"], "no checkpoint was written yet"),
])
def test_ctrl_c_is_one_line_and_rc_130(command, extra, kept, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    from saliency_jax.app import agents, evaluate, train_classifier

    monkeypatch.setattr(evaluate, "run_evaluate", interrupted)
    monkeypatch.setattr(train_classifier, "train_classifier", interrupted)
    monkeypatch.setattr(agents, "load_classifier_variables", interrupted)
    assert cli.main([command, *extra, "--no-progress"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"saliency-jax {command}: interrupted; ")
    assert kept in err[0] and "run the same command" in err[0]


def test_the_program_skips_teardown_after_ctrl_c_only(monkeypatch):
    exits = []
    monkeypatch.setattr(cli.os, "_exit", exits.append)
    monkeypatch.setattr(cli, "main", lambda: 130)
    cli.entry()
    assert exits == [130]
    for code in (0, 2):
        monkeypatch.setattr(cli, "main", lambda code=code: code)
        assert cli.entry() == code
    assert exits == [130]


def test_the_console_script_is_the_entry():
    import tomllib

    pyproject = pathlib.Path(__file__).parents[1] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts == {"saliency-jax": "saliency_jax.app.cli:entry"}


def _wait_for(predicate, process, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def _default_sigint():
    """In the child: SIGINT back to its default. A shell's background job (``cmd &``, nohup)
    starts with SIGINT ignored, which Python then keeps: no KeyboardInterrupt to test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_sigint_to_a_real_evaluate_keeps_the_records_and_resumes(tmp_path, checkpoint):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "saliency_jax.app.cli", "evaluate", "rise", "occlusion",
            "--checkpoint", checkpoint, "--num-images", "24", "--num-masks", "500",
            "--batch-size", "2", "--out", str(out), "--no-progress"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, preexec_fn=_default_sigint)
    records = out / "records" / "process-00000.jsonl"
    try:
        assert _wait_for(lambda: records.exists() and records.read_text().count("\n") >= 2,
                         process, 600), "no record was written"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("saliency-jax evaluate: interrupted; ") and "resume" in last
    kept = records.read_text().count("\n")
    assert f"{kept} image x method records are kept" in last
    assert kept < 48
    # The same command again computes only what is missing and writes the table.
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr
    assert records.read_text().count("\n") == 48 and (out / "table.md").exists()


@pytest.mark.slow
def test_sigint_to_a_real_train_classifier_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "tc"
    argv = [sys.executable, "-m", "saliency_jax.app.cli", "train-classifier", "--out", str(out),
            "--steps", "400", "--steps-per-checkpoint", "2", "--num-train", "64",
            "--batch-size", "8", "--no-progress"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"},
                               preexec_fn=_default_sigint)
    state = out / "train_state"
    try:
        assert _wait_for(lambda: state.exists() and any(p.name.isdigit() for p in
                                                        state.iterdir()), process, 600)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    step = max(int(p.name) for p in state.iterdir() if p.name.isdigit())
    assert last == (f"saliency-jax train-classifier: interrupted; the checkpoint at step {step} "
                    f"is kept in {state}; run the same command again to resume from it")


def _swallow_one_sigint_then_wait(seconds):
    """SIGINT arrives while a frame that drops exceptions runs (as a gc callback does), then
    the command goes on."""
    try:
        signal.raise_signal(signal.SIGINT)
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def _interrupt_then_clean_up(cleaned):
    """SIGINT raised, then a ``finally`` that needs 5 repeat periods to keep what was done."""
    try:
        signal.raise_signal(signal.SIGINT)
        time.sleep(20.0)
    finally:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            time.sleep(0.01)
        cleaned.append(True)


def test_a_swallowed_ctrl_c_is_raised_again_and_the_handler_restored():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threads, start = threading.active_count(), time.monotonic()
        with pytest.raises(KeyboardInterrupt), cli._insistent_sigint(retry=0.1):
            _swallow_one_sigint_then_wait(20.0)
        assert time.monotonic() - start < 10.0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert threading.active_count() == threads  # the repeater has ended
        cleaned = []
        with pytest.raises(KeyboardInterrupt), cli._insistent_sigint(retry=0.1):
            _interrupt_then_clean_up(cleaned)
        assert cleaned == [True]  # no repeat landed in the clean-up
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job: left as it is
        with cli._insistent_sigint(retry=0.1):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
