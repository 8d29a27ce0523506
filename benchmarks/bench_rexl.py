"""RExL vs RISE on the embedded default: deletion/insertion AUC, model queries, time per image.

The black box is the packaged ``resnet_small`` (112 x 112, synthetic shapes); the RExL agents are
the packaged ones (``saliency_jax/assets/agents/rexl_<mode>_resnet_small``, trained by
``benchmarks/train_default_agents.py``); RISE uses N masks (default 4000, s = 7, p = 0.5); a
uniform random map is the floor.
Metrics follow the RISE protocol (METHODS §5.1) with the step scaled to the image:
``step = 56`` px at 112² (= 224 px at 224², 224 steps); deletion to the model's mean colour
(lower is better), insertion from the ``gkern(11, 5)`` blur (higher is better); the class is the
top-1 of the original. Time per image is the steady state of the compiled explainer (median
over images after one warm-up call; compile time reported apart).

    python benchmarks/bench_rexl.py --num-images 16          # writes results/rexl_vs_rise.json
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.train_default_agents import (  # noqa: E402
    AGENTS,
    MODEL,
    black_box,
    classifier_path,
    variables_digest,
)
from saliency_jax import (
    metrics,  # noqa: E402
    models,  # noqa: E402
)
from saliency_jax._src.rexl import load_rexl_agent, rexl, rexl_num_queries  # noqa: E402
from saliency_jax._src.rise import RiseConfig, rise  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402

STEP = 56


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def evaluate(name, explain, queries, model_fn, images, targets, key, log):
    """Maps, AUCs and timings of one method over the images."""
    deletion = functools.partial(metrics.deletion, step=STEP)
    insertion = functools.partial(metrics.insertion, step=STEP)
    keys = jax.random.split(key, len(images))
    t0 = time.perf_counter()
    jax.block_until_ready(explain(keys[0], model_fn, images[0], targets[0]))
    compile_and_first_s = time.perf_counter() - t0
    rows, times = [], []
    for i in range(len(images)):
        sal, dt = _timed(explain, keys[i], model_fn, images[i], targets[i])
        times.append(dt)
        d = float(deletion(model_fn, images[i], sal, targets[i]).auc)
        ins = float(insertion(model_fn, images[i], sal, targets[i]).auc)
        rows.append((d, ins))
    rows = np.asarray(rows)
    out = dict(method=name, queries=queries, deletion_auc=float(rows[:, 0].mean()),
               deletion_auc_std=float(rows[:, 0].std()), insertion_auc=float(rows[:, 1].mean()),
               insertion_auc_std=float(rows[:, 1].std()), per_image_deletion=rows[:, 0].tolist(),
               per_image_insertion=rows[:, 1].tolist(), compile_and_first_s=compile_and_first_s,
               median_s_per_image=statistics.median(times))
    log(f"{name:28s} queries {queries:5d}  deletion {out['deletion_auc']:.4f}  insertion "
        f"{out['insertion_auc']:.4f}  {out['median_s_per_image']:.3f} s/image")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--num-masks", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="deletion,insertion")
    parser.add_argument("--out-name", default="rexl_vs_rise")
    parser.add_argument("--classifier", default=None,
                        help="classifier variables folder (default: the packaged one)")
    args = parser.parse_args(argv)
    log = functools.partial(print, flush=True)

    variables = models.load_variables(classifier_path(args.classifier), name=MODEL)
    model_fn = models.classifier(MODEL, variables)
    data = shapes.generate_arrays("test", args.num_images, seed=0, image_size=112)
    images = jnp.asarray(data["image"], jnp.float32) / 255.0
    probs = jax.jit(lambda m, x: m(x))(model_fn, images)
    targets = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    accuracy = float(np.mean(np.asarray(targets) == data["label"]))
    key = jax.random.key(args.seed)

    results = []
    for mode in args.modes.split(","):
        path = AGENTS / f"rexl_{mode}_{MODEL}"
        if not path.exists():
            log(f"no agent at {path}: skipped")
            continue
        agent_params, config = load_rexl_agent(path)
        agent_digest = json.loads((path / "agent.json").read_text()).get("classifier_sha256")
        if agent_digest != variables_digest(variables):
            log(f"warning: {path.name} was trained on another classifier (sha256 differs)")
        _, features_fn, _ = black_box(variables, config.stage)
        for deterministic in (True, False):
            explain = functools.partial(rexl, config=config, agent_params=agent_params,
                                        features_fn=features_fn, deterministic=deterministic)
            name = f"rexl_{mode}_{'argmax' if deterministic else 'sampled'}"
            results.append(evaluate(name, explain, rexl_num_queries(config), model_fn, images,
                                    targets, key, log))
    random_map = lambda k, m, x, t: jax.random.uniform(k, x.shape[:2])  # noqa: E731
    results.append(evaluate("random_map", random_map, 0, model_fn, images, targets, key, log))
    rise_config = RiseConfig(num_masks=args.num_masks, grid=7, p_keep=0.5, batch_size=100)
    results.append(evaluate(f"rise_{args.num_masks}",
                            functools.partial(rise, config=rise_config), args.num_masks,
                            model_fn, images, targets, key, log))
    rise_row = results[-1]
    for row in results[:-1]:
        if row["queries"] == 0:
            continue
        row["insertion_vs_rise"] = row["insertion_auc"] / rise_row["insertion_auc"]
        row["deletion_vs_rise"] = row["deletion_auc"] / rise_row["deletion_auc"]
        row["queries_vs_rise"] = row["queries"] / rise_row["queries"]
        row["time_vs_rise"] = row["median_s_per_image"] / rise_row["median_s_per_image"]
        log(f"{row['method']:28s} insertion {row['insertion_vs_rise']:.3f}x RISE, deletion "
            f"{row['deletion_vs_rise']:.3f}x RISE, queries 1/{1 / row['queries_vs_rise']:.0f}, "
            f"time {row['time_vs_rise']:.3f}x")
    payload = dict(model=MODEL, classifier_sha256=variables_digest(variables), image_size=112,
                   num_images=args.num_images, step=STEP,
                   classifier_accuracy_on_these_images=accuracy, results=results,
                   environment=common.environment(), command=" ".join(sys.argv))
    log(f"wrote {common.write_result(args.out_name, payload)}")


if __name__ == "__main__":
    main()
