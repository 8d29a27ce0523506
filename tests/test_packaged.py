"""The packaged defaults: the trained classifiers and the agents that ship inside saliency-jax.

Each classifier's recorded accuracy is recomputed here from the shipped checkpoint on the test
split it was measured on, so a checkpoint swapped without retraining (or a change in the models
or the renderer) fails; the agents must belong to the shipped classifier (digest).
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from saliency_jax.app import agents, classifiers, methods
from saliency_jax.app.train_classifier import evaluate_accuracy, object_reliance
from saliency_jax.data import shapes


@pytest.fixture(scope="module")
def test_split():
    return shapes.generate_arrays("test", 600)


@pytest.mark.parametrize("model", classifiers.DEFAULT_MODELS)
def test_packaged_classifier_reaches_its_recorded_accuracy(model, test_split):
    folder = classifiers.packaged_classifier_dir(model)
    assert (folder / "variables").exists(), f"no packaged {model}; see train_default_classifiers"
    recorded = json.loads((folder / "metrics.json").read_text())
    assert recorded["config"]["model"] == model
    assert recorded["config"]["num_test"] == 600
    assert recorded["test_accuracy"] >= 0.97

    model_fn, _ = classifiers.load_classifier(model)
    accuracy = evaluate_accuracy(model_fn, test_split["image"], test_split["label"])
    assert accuracy == pytest.approx(recorded["test_accuracy"], abs=1 / 600)


@pytest.mark.slow
@pytest.mark.parametrize("model", classifiers.DEFAULT_MODELS)
def test_packaged_classifier_uses_the_object(model, test_split):
    # Recomputed from the shipped checkpoint: hiding the object's box must destroy the score,
    # hiding as much area elsewhere must not; and the recorded figures must be these.
    model_fn, _ = classifiers.load_classifier(model)
    reliance = object_reliance(model_fn, test_split["image"], test_split["label"],
                               test_split["mask"])
    original = reliance["original"]["true_class_prob"]
    assert reliance["object_box_occluded"]["true_class_prob"] < 0.3 * original
    assert reliance["same_area_elsewhere_occluded"]["true_class_prob"] > 0.9 * original
    recorded = json.loads(
        (classifiers.packaged_classifier_dir(model) / "metrics.json").read_text())["object_reliance"]
    for case in ("original", "object_box_occluded", "same_area_elsewhere_occluded"):
        assert reliance[case]["true_class_prob"] == pytest.approx(
            recorded[case]["true_class_prob"], abs=1e-3)


def test_packaged_agents_belong_to_the_packaged_classifier():
    variables = agents.load_classifier_variables(model="resnet_small")
    digest = agents.variables_digest(variables)
    for variant, mode, reference in (("rexl", "deletion", True),
                                     ("rexl_masked", "deletion", False),
                                     ("rexl_insertion", "insertion", False)):
        params, config, _, meta = agents.rexl_agent_for(
            "resnet_small", variables, (112, 112), mode=mode,
            agent_dir=agents.packaged_agent_dir(variant))
        assert meta["classifier_sha256"] == digest and config.mode == mode
        assert config.grid == 7
        # the packaged rexl is the reference code's MDP (noise substrate, revisits allowed)
        assert (config.substrate == "noise" and not config.mask_visited) == reference
        assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(params))
    params, config, meta = agents.rlcam_agent_for((112, 112))
    assert config.grid == 7 and meta["classifier_sha256"] == digest
    assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(params))


def test_rexl_rollouts_row_is_the_packaged_agent_with_averaged_episodes():
    variables = agents.load_classifier_variables(model="resnet_small")
    ctx = methods.model_context("resnet_small", variables, (112, 112))
    single, averaged = methods.build_methods(["rexl", "rexl_rollouts"], ctx)
    r, t = methods.REXL_ROLLOUTS
    assert single.queries == 50 and averaged.queries == 1 + r * t <= 4000 // 50
    # the packaged agent's own inference is the code's (one episode, no policy term)
    assert averaged.description == single.description + f"; {r} rollout(s) of {t} steps averaged"


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


# The agents' quality against random maps and their baselines: tests/test_agent_quality.py.
