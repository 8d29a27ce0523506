"""The default agents: ``saliency-jax train-agent`` end to end, resuming, the classifier check,
RL-CAM's portability and the command's errors.

Tiny runs: a randomly initialised resnet_small on 35 x 35 shapes images (5-px patches of the
7 x 7 grid), a couple of PPO updates. Bit-identical resumption of ``train_agent`` itself is
tested in ``test_rl_ppo.py`` and ``test_rlcam.py``; here it is the command's wiring: the data,
encoder and environment rebuilt by a second call must continue the same run.
"""

import json

import jax
import numpy as np
import pytest

from saliency_jax import models, testing
from saliency_jax._src.rlcam import rlcam_num_queries
from saliency_jax.app import agents, cli, methods

SIZE = 35
TINY = ["--image-size", str(SIZE), "--num-images", "8", "--num-envs", "4", "--no-progress"]
REXL_ARGS = ["train-agent", "--method", "rexl", "--updates", "2", "--checkpoint-every", "1",
             *TINY]


def _leaves_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    """Two random resnet_small classifiers: saved folders and their variables."""
    root = tmp_path_factory.mktemp("classifiers")
    out = {}
    for name, seed in (("mine", 0), ("other", 1)):
        variables = models.init("resnet_small", jax.random.key(seed), input_hw=(SIZE, SIZE),
                                num_classes=6)
        models.save_variables(root / name, variables, name="resnet_small")
        out[name] = (str(root / name), models.load_variables(root / name, name="resnet_small"))
    return out


def _context(variables, hw=(SIZE, SIZE), name="resnet_small"):
    return methods.ModelContext(name, variables, hw)


def test_train_agent_rexl_end_to_end_and_resumed(classifiers, tmp_path, capsys):
    # One test (not a shared fixture): under pytest-xdist a fixture would train once per worker.
    run_dir = tmp_path / "full"
    argv = [*REXL_ARGS, "--classifier", classifiers["mine"][0], "--run-dir", str(run_dir)]
    assert cli.main(argv) == 0
    agent = run_dir / "agent"  # the default --out: in the run folder, not the package
    assert {p.name for p in agent.iterdir()} == {"params", "agent.json", "metrics.json"}
    meta = json.loads((agent / "agent.json").read_text())
    variables = classifiers["mine"][1]
    assert meta["model"] == "resnet_small"
    assert meta["classifier_sha256"] == agents.variables_digest(variables)
    assert meta["env"]["image_hw"] == [SIZE, SIZE] and meta["env"]["mode"] == "deletion"
    assert meta["env"]["stage"] == "layer1"  # the deepest stage >= 7 x 7 at 35 px (9 x 9)
    metrics = json.loads((agent / "metrics.json").read_text())
    assert metrics["updates"] == 2 and len(metrics["history"]["episode_return"]) == 2
    assert "--method rexl" in metrics["command"]

    # Loadable as the rexl method for this classifier.
    method = methods.rexl_method(_context(variables), agent_dir=agent)
    # train-agent's default is the reference code's MDP, whose revisits call for sampled actions
    assert meta["env"]["substrate"] == "noise" and not meta["env"]["mask_visited"]
    assert method.name == "rexl" and method.queries == 50 and "sampled" in method.description
    assert "reference MDP" in method.description
    model_fn = models.classifier("resnet_small", variables)
    image = jax.random.uniform(jax.random.key(0), (SIZE, SIZE, 3))
    sal = method.explain(jax.random.key(1), model_fn, image, 2)
    assert sal.shape == (SIZE, SIZE) and np.all(np.isfinite(sal)) and np.ptp(sal) > 0

    # The run folder belongs to its classifier: another one is refused before training.
    other = [*argv[:argv.index("--classifier")], "--classifier", classifiers["other"][0],
             "--run-dir", str(run_dir)]
    capsys.readouterr()
    assert cli.main(other) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "classifier_sha256" in err

    # Interrupted after one chunk, then the same command: the uninterrupted run's parameters.
    full, _ = agents.load_agent_meta(agent)
    cut_dir = tmp_path / "cut"
    stopped = agents.train_rexl("deletion", classifier_variables=variables, run_dir=cut_dir,
                                updates=2, num_envs=4, num_images=8, image_size=SIZE,
                                checkpoint_every=1, progress=False, max_chunks=1)
    assert stopped is None and not (cut_dir / "agent").exists()
    out = tmp_path / "elsewhere"
    resumed_argv = [*argv[:argv.index("--run-dir")], "--run-dir", str(cut_dir), "--out", str(out)]
    assert cli.main(resumed_argv) == 0
    _leaves_equal(full, agents.load_agent_meta(out)[0])
    history = json.loads((out / "metrics.json").read_text())["history"]["episode_return"]
    np.testing.assert_array_equal(history, metrics["history"]["episode_return"])
    # Finished: the same command again changes nothing.
    assert cli.main(resumed_argv) == 0
    _leaves_equal(full, agents.load_agent_meta(out)[0])


def test_train_rexl_warm_start(classifiers, tmp_path):
    # A warm start from another MDP's agent (same observation and layers): update 0 holds its
    # parameters, so one update at a vanishing learning rate ends next to them, far from a
    # fresh initialisation.
    variables = classifiers["mine"][1]
    tiny = dict(classifier_variables=variables, num_envs=4, num_images=8, image_size=SIZE,
                checkpoint_every=1, progress=False, layers=(8,))
    start = agents.train_rexl("deletion", run_dir=tmp_path / "masked", updates=1,
                              substrate="baseline", mask_visited=True, seed=3, **tiny)
    warm = agents.train_rexl("deletion", run_dir=tmp_path / "warm", updates=1, lr=1e-12,
                             init_agent=start["agent_dir"], **tiny)
    init, _ = agents.load_agent_meta(start["agent_dir"])
    params, meta = agents.load_agent_meta(warm["agent_dir"])
    assert meta["init_agent"] == start["agent_dir"] and meta["env"]["substrate"] == "noise"
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(init), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="init_agent"):  # other widths
        agents.train_rexl("deletion", run_dir=tmp_path / "bad", updates=1,
                          init_agent=start["agent_dir"], **{**tiny, "layers": (16,)})


def _untrained_rexl_agent(path, variables, *, hw=(SIZE, SIZE), stage="layer1"):
    """An agent folder as train-agent writes it, with random parameters (no training)."""
    from saliency_jax._src import rexl
    from saliency_jax._src.rl import checkpoint

    config = rexl.RexlConfig(substrate="baseline", mask_visited=True, num_class_planes=6,
                             stage=stage, pi_layers=(8,), vf_layers=(8,))
    features = models.features_fn("resnet_small", variables, names=(stage,))
    params = rexl.init_agent(jax.random.key(0), config, features, hw)
    env = {"env": "rexl", "grid": 7, "mode": "deletion", "substrate": "baseline",
           "mask_visited": True, "num_class_planes": 6, "stage": stage, "image_hw": list(hw)}
    meta = {"env": env, "train_config": {"pi_layers": [8], "vf_layers": [8]},
            "model": "resnet_small", "classifier_sha256": agents.variables_digest(variables)}
    checkpoint.save_agent(path, params, meta)
    return path


def test_rexl_agent_of_another_classifier_is_refused(classifiers, tmp_path, monkeypatch):
    mine, other = classifiers["mine"][1], classifiers["other"][1]
    agent = _untrained_rexl_agent(tmp_path / "agent", mine)
    assert agents.rexl_agent_for("resnet_small", mine, (SIZE, SIZE), agent_dir=agent)
    with pytest.raises(ValueError, match="saliency-jax train-agent --method rexl"):
        methods.rexl_method(_context(other), agent_dir=agent)
    with pytest.raises(ValueError, match="sha256"):
        agents.rexl_agent_for("resnet_small", other, (SIZE, SIZE), agent_dir=agent)
    with pytest.raises(ValueError, match="'vgg_small'"):
        agents.rexl_agent_for("vgg_small", mine, (SIZE, SIZE), agent_dir=agent)
    with pytest.raises(ValueError, match="trained at 35x35"):
        agents.rexl_agent_for("resnet_small", mine, (70, 70), agent_dir=agent)
    with pytest.raises(ValueError, match="insertion"):
        agents.rexl_agent_for("resnet_small", mine, (SIZE, SIZE), mode="insertion",
                              agent_dir=agent)
    with pytest.raises(ValueError, match="no rexl_insertion agent"):
        agents.rexl_agent_for("resnet_small", mine, (SIZE, SIZE), mode="insertion",
                              agent_dir=tmp_path / "nothing")
    # The registry: as the default agent, available for its classifier, skipped for another.
    monkeypatch.setattr(agents, "packaged_agent_dir", lambda method, model="": agent)
    names = ["rexl", "random"]
    assert [m.name for m in methods.build_methods(names, _context(mine))] == names
    with pytest.raises(methods.MethodUnavailableError, match="train-agent"):
        methods.build_methods(names, _context(other))
    notes = []
    built = methods.build_methods(names, _context(other),
                                  on_unavailable=lambda n, why: notes.append((n, why)))
    assert [m.name for m in built] == ["random"]
    assert [n for n, _ in notes] == ["rexl"] and "sha256" in notes[0][1]


@pytest.fixture(scope="module")
def rlcam_agent(classifiers, tmp_path_factory):
    root = tmp_path_factory.mktemp("rlcam")
    installed = root / "installed"
    argv = ["train-agent", "--method", "rl-cam", "--updates", "1", *TINY,
            "--classifier", classifiers["mine"][0], "--run-dir", str(root / "run"), "--install"]
    with pytest.MonkeyPatch.context() as patch:  # --install writes here, not into the package
        patch.setattr(agents, "packaged_agent_dir", lambda method, model="": installed)
        assert cli.main(argv) == 0
    return installed


def test_train_agent_rlcam_installs_a_portable_agent(rlcam_agent, classifiers):
    meta = json.loads((rlcam_agent / "agent.json").read_text())
    assert meta["classifier_sha256"] == agents.variables_digest(classifiers["mine"][1])
    assert meta["model"] == "resnet_small" and meta["rlcam_config"]["grid"] == 7
    assert (rlcam_agent / "metrics.json").exists()
    # Scores-only observations: the agent runs for another classifier and image size.
    model_fn, variables = testing.tiny_cnn(jax.random.key(3), (63, 63))
    method = methods.rlcam_method(_context(variables, (63, 63), "tiny"), agent_dir=rlcam_agent)
    assert method.queries == rlcam_num_queries(agents.RLCAM_CONFIG) == 1276
    image = jax.random.uniform(jax.random.key(4), (63, 63, 3))
    sal, queries = method.explain_counted(jax.random.key(0), model_fn, image, 1)
    assert sal.shape == (63, 63) and np.all(np.isfinite(sal))
    assert 2 + 98 <= int(queries) <= method.queries and (int(queries) - 2) % 98 == 0
    np.testing.assert_array_equal(method.explain(jax.random.key(0), model_fn, image, 1), sal)
    with pytest.raises(methods.MethodUnavailableError, match="grid"):  # 7 does not divide 64
        methods.rlcam_method(_context(variables, (64, 64)), agent_dir=rlcam_agent)
    with pytest.raises(methods.MethodUnavailableError, match="train-agent --method rlcam"):
        methods.rlcam_method(_context(variables), agent_dir=rlcam_agent.parent / "nothing")


def test_greedy_baseline_counts_its_queries():
    model_fn, variables = testing.tiny_cnn(jax.random.key(3), (63, 63))
    (method,) = methods.build_methods(["rlcam_greedy"], _context(variables, (63, 63), "tiny"))
    image = jax.random.uniform(jax.random.key(4), (63, 63, 3))
    sal, queries = method.explain_counted(jax.random.key(0), model_fn, image, 1)
    assert sal.shape == (63, 63) and int(queries) <= method.queries
    with pytest.raises(methods.MethodUnavailableError, match="grid"):
        methods.build_methods(["rlcam_greedy"], _context(variables, (64, 64)))


@pytest.mark.parametrize("extra, message", [
    (["--method", "rlcam", "--mode", "insertion"], "apply to --method rexl only"),
    (["--method", "rlcam", "--substrate", "baseline"], "apply to --method rexl only"),
    (["--method", "rexl", "--out", "x", "--install"], "not both"),
    (["--method", "rexl", "--updates", "0"], "argument --updates: must be an integer >= 1"),
    (["--method", "rlcam", "--num-images", "-3"],
     "argument --num-images: must be an integer >= 1"),
    (["--method", "rexl", "--num-envs", "6"], "num_envs must be a multiple of 4"),
    (["--method", "rexl", "--image-size", "50"], "grid=7 must divide"),
    (["--method", "rexl", "--model", "resnet9000"], "unknown model"),
    (["--method", "rexl", "--classifier", "/no/such/folder"], "does not exist"),
    (["--method", "rexl", "--out", "{tmp}/folder"], "not an agent folder"),
    (["--method", "rexl", "--out", "{tmp}/run/.."], "must not be the run folder"),
])
def test_train_agent_bad_arguments_exit_2(extra, message, classifiers, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    argv = ["train-agent", *extra, "--run-dir", str(tmp_path / "run"), "--no-progress"]
    if "--classifier" not in extra:
        argv += ["--classifier", classifiers["mine"][0]]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "folder" / "notes.txt").read_text() == "mine"  # nothing replaced
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


@pytest.mark.parametrize("argv", [["train-agent"], ["train-agent", "--method", "nope"],
                                  ["train-agent", "--method", "rexl", "--mode", "both"]])
def test_train_agent_unparsable_arguments_exit_2(argv, capsys):
    assert cli.main(argv) == 2  # argparse's error, returned as the exit status
    err = capsys.readouterr().err
    assert "--method" in err or "--mode" in err


def test_packaged_agent_dirs_and_digest():
    assert agents.packaged_agent_dir("rexl").name == "rexl_deletion_resnet_small"
    assert agents.packaged_agent_dir("rexl_insertion", "vgg_small").name == \
        "rexl_insertion_vgg_small"
    assert agents.packaged_agent_dir("rlcam").parent.name == "agents"
    with pytest.raises(ValueError, match="method"):
        agents.packaged_agent_dir("rise")
    a = {"params": {"w": np.ones((2, 3), np.float32)}}
    b = {"params": {"w": np.ones((2, 3), np.float32)}}
    assert agents.variables_digest(a) == agents.variables_digest(b)
    b["params"]["w"][0, 0] = 1.5
    assert agents.variables_digest(a) != agents.variables_digest(b)


def test_evaluate_records_each_images_query_count(tmp_path):
    from saliency_jax.app import evaluate as ev
    from saliency_jax.data import shapes

    yy, xx = np.mgrid[:63, :63]  # a disc the greedy policy covers in 0 or 9 steps here
    model_fn = testing.region_model((yy - 31) ** 2 + (xx - 31) ** 2 < 100)
    dataset = [shapes.render_example(0, "test", i, image_size=63) for i in range(3)]
    config = ev.EvaluateConfig(model="tiny", methods=("rlcam_greedy", "random"), num_images=3,
                               image_size=63, target="top1")
    context = _context({}, (63, 63), "tiny")
    summary = ev.run_evaluate(config, tmp_path, model_fn=model_fn, dataset=dataset,
                              context=context, progress=False)
    (method,) = methods.build_methods(["rlcam_greedy"], context)
    counts = []
    records = ev.read_records(tmp_path)
    for i in range(3):
        record = records[(i, "rlcam_greedy")]
        image = np.asarray(dataset[i]["image"], np.float32) / 255.0
        _, queries = method.explain_counted(ev.method_key(0, i, "rlcam_greedy"), model_fn, image,
                                            record["target"])
        assert record["queries"] == int(queries)  # batched: each image's own count
        assert records[(i, "random")]["queries"] == 0
        counts.append(int(queries))
    assert len(set(counts)) > 1  # varies per image: the summary gives the mean
    assert summary["rlcam_greedy"]["queries"] == round(float(np.mean(counts)), 1)
    assert summary["random"]["queries"] == 0
