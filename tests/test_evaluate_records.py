"""Results folders that cannot mix: settings digests, the weights digest, run.json created once,
one writer per record file (real concurrent processes), and the folder's whole table."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import jax
import pytest

from saliency_jax import testing
from saliency_jax.app import evaluate as ev
from saliency_jax.app import methods
from saliency_jax.data import shapes

SIZE = 48
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_fn():
    return testing.tiny_cnn(jax.random.key(0), (SIZE, SIZE))[0]


@pytest.fixture(scope="module")
def dataset():
    return [shapes.render_example(0, "test", i, image_size=SIZE) for i in range(3)]


def _config(**kw):
    base = dict(model="tiny", methods=("rise", "random"), num_images=2, num_masks=16,
                image_size=SIZE, target="top1")
    return ev.EvaluateConfig(**{**base, **kw})


def _run(config, out, model_fn, dataset, **kw):
    return ev.run_evaluate(config, out, model_fn=model_fn, dataset=dataset, progress=False, **kw)


def test_a_method_whose_settings_changed_is_refused_naming_the_field(
        tmp_path, model_fn, dataset, monkeypatch):
    _run(_config(), tmp_path, model_fn, dataset)
    stored = json.loads((tmp_path / "methods" / "rise.json").read_text())
    assert stored["settings"]["RiseConfig"]["p_keep"] == 0.5
    real = methods.RiseConfig
    monkeypatch.setattr(methods, "RiseConfig", lambda **kw: real(**{**kw, "p_keep": 0.25}))
    with pytest.raises(ValueError, match=r"rise records made with other settings "
                       r"\(RiseConfig\.p_keep: 0\.5 there, 0\.25 now\)"):
        _run(_config(), tmp_path, model_fn, dataset)
    # Another method in the same folder is unaffected.
    assert _run(_config(methods=("random",), num_images=3), tmp_path, model_fn, dataset)


def test_other_classifier_weights_are_refused(tmp_path, model_fn, dataset):
    _run(_config(methods=("random",)), tmp_path, model_fn, dataset)
    other = testing.tiny_cnn(jax.random.key(1), (SIZE, SIZE))[0]
    with pytest.raises(ValueError, match=r"other settings \(weights: '[0-9a-f]{64}' there, "
                       r"'[0-9a-f]{64}' now\)"):
        _run(_config(methods=("random",)), tmp_path, other, dataset)


def test_a_record_with_another_digest_is_refused(tmp_path, model_fn, dataset):
    _run(_config(methods=("random",)), tmp_path, model_fn, dataset)
    path = tmp_path / "records" / "process-00000.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    assert record["digest"] == json.loads((tmp_path / "methods" / "random.json").read_text()
                                          )["digest"]
    record["digest"] = "0" * 16
    path.write_text("\n".join([lines[0], json.dumps(record)]) + "\n")
    with pytest.raises(ValueError, match="the random record of image 1 was made with other "
                       "settings"):
        _run(_config(methods=("random",), num_images=3), tmp_path, model_fn, dataset)


def _python(code: str, *args, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def test_run_json_is_created_once_by_racing_processes(tmp_path):
    """Four processes create the same 40 files at the same moment: each file has one winner,
    and its content is the winner's, whole."""
    start = time.time() + 6.0  # after every process has imported the module
    code = """
        import json, os, pathlib, sys, time
        from saliency_jax.app.evaluate import _create_once
        root, start = pathlib.Path(sys.argv[1]), float(sys.argv[2])
        time.sleep(max(0.0, start - time.time()))
        won = [k for k in range(40) if _create_once(root / f"{k}.json", {"pid": os.getpid(),
                                                                        "pad": "x" * 65536})]
        print(json.dumps({"pid": os.getpid(), "won": won}))
    """
    procs = [_python(code, tmp_path, start) for _ in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out))
    winners = {}
    for r in results:
        for k in r["won"]:
            assert k not in winners, f"file {k} created twice"
            winners[k] = r["pid"]
    assert sorted(winners) == list(range(40))
    for k, pid in winners.items():
        assert json.loads((tmp_path / f"{k}.json").read_text())["pid"] == pid
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_second_writer_of_the_same_records_is_refused(tmp_path):
    """A process holds process-00000's records (as a running evaluate does); a second writer
    of the same file is refused with the holder's pid; once it exits, the lock is free."""
    records = tmp_path / "records"
    holder = _python("""
        import pathlib, sys, time
        from saliency_jax.app.evaluate import _RecordWriter
        writer = _RecordWriter(pathlib.Path(sys.argv[1]) / "process-00000.jsonl")
        print("locked", flush=True)
        time.sleep(30)
    """, records)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"another process \(pid {holder.pid}\) is writing "
                           r"these records .*process-00000\.lock is locked"):
            ev._RecordWriter(records / "process-00000.jsonl")
        ev._RecordWriter(records / "process-00001.jsonl").close()  # another id is free
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    ev._RecordWriter(records / "process-00000.jsonl").close()  # released by its death


def test_a_subset_run_keeps_the_folder_table_whole(tmp_path, model_fn, dataset):
    _run(_config(methods=("rise", "random")), tmp_path, model_fn, dataset)
    summary = _run(_config(methods=("random",), num_images=3), tmp_path, model_fn, dataset)
    assert list(summary) == ["random"] and summary["random"]["num_images"] == 3
    table = (tmp_path / "table.md").read_text()
    assert "| rise | 2 |" in table and "| random | 3 |" in table and "Images" in table
    written = json.loads((tmp_path / "results.json").read_text())
    assert list(written["summary"]) == ["rise", "random"]
    assert written["config"]["num_images"] == {"rise": 2, "random": 3}
    # The folder's settings come back from run.json, and a merge needs nothing else.
    config = ev.config_from_run_dir(tmp_path)
    assert (config.model, config.num_masks, config.image_size, config.target) == (
        "tiny", 16, SIZE, "top1")
    assert config.methods == ("rise", "random")
    merged = _run(ev.dataclasses.replace(config, methods=()), tmp_path, model_fn, dataset,
                  merge_only=True)
    assert merged == {}
    assert (tmp_path / "table.md").read_text() == table


def test_config_from_run_dir_names_a_folder_without_run_json(tmp_path):
    with pytest.raises(ValueError, match="run.json not found"):
        ev.config_from_run_dir(tmp_path)


def test_the_progress_bar_moves_after_every_method_of_a_batch(
        tmp_path, model_fn, dataset, monkeypatch):
    import tqdm.auto

    updates = []

    class Bar:
        def __init__(self, total, **kw):
            self.total = total

        def update(self, n):
            updates.append(n)

        def set_postfix_str(self, *a, **kw):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    ev.run_evaluate(_config(methods=("rise", "random"), num_images=2, batch_size=2), tmp_path,
                    model_fn=model_fn, dataset=dataset, progress=True)
    assert updates == [2, 2]  # one batch of 2 images: the bar moved after each method
