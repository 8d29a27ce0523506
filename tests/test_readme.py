"""The README's Python quickstart runs as written, on the packaged classifier."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_and_points_at_the_object():
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    deletion_auc, pointing = out.getvalue().split()
    assert 0.0 <= float(deletion_auc) < 0.5
    assert pointing == "True"


def _command_lines() -> list[str]:
    """The ``saliency-jax ...`` commands of the README's "Command line" block, in order."""
    block = README.read_text().split("## Command line", 1)[1]
    code = re.search(r"```bash\n(.*?)```", block, re.S).group(1).replace("\\\n", " ")
    return [line.split("#", 1)[0].strip() for line in code.splitlines()
            if line.startswith("saliency-jax ")]


def test_every_readme_command_parses():
    import shlex

    from saliency_jax.app import cli

    lines = _command_lines()
    assert len(lines) >= 8
    parser = cli.build_parser()
    for line in lines:
        args = parser.parse_args(shlex.split(line)[1:])  # SystemExit (a failure) if refused
        assert args.command in cli.COMMANDS


def _small(words: list[str]) -> list[str] | None:
    """A README command made small enough for a test (fewer images, masks and steps), or None
    where it needs files from outside (a photo, TFDS data, torch, a package install)."""
    command = words[1]
    if command == "evaluate":
        if "--data-dir" in words:
            return None
        words = list(words)
        if "--num-images" in words:
            at = words.index("--num-images") + 1
            words[at] = str(-(-int(words[at]) // 4))
        else:
            words += ["--num-images", "2"]
        return [*words, "--num-masks", "32", "--batch-size", "4", "--no-progress"]
    if command == "explain" and "--dataset" in words:
        return [*words, "--num-masks", "32", "--no-progress"]
    if command == "train-classifier":
        return [*words, "--steps", "2", "--steps-per-checkpoint", "2", "--warmup-steps", "1",
                "--num-train", "16", "--batch-size", "8", "--no-progress"]
    return None


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path, monkeypatch):
    """The README's command-line sequence, in order, in one working directory: every command
    that needs nothing from outside succeeds (the evaluate runs accumulate in their folders)."""
    import json
    import shlex

    from saliency_jax.app import cli, methods

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(methods, "DEFAULT_METHODS", ("rise", "gradcam", "random"))
    ran = []
    for line in _command_lines():
        words = _small(shlex.split(line))
        if words is None:
            continue
        assert cli.main(words[1:]) == 0, line
        ran.append(line)
    assert sum(line.startswith("saliency-jax evaluate") for line in ran) >= 3
    records = tmp_path / "runs" / "evaluate-saliency_shapes-resnet_small" / "records"
    lines = [json.loads(x) for x in (records / "process-00000.jsonl").read_text().splitlines()]
    pairs = {(r["index"], r["method"]) for r in lines}
    assert len(pairs) == len(lines)  # nothing computed twice across the README's runs
