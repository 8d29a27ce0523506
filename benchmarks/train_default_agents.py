"""Train the packaged RExL agents of the embedded default (resnet_small on synthetic shapes).

Dataset-wide agents (METHODS §3.3, ``class_index = -1``): all training images, target = the
classifier's top-1, one-hot class planes in the state. The black box is the packaged default
classifier ``resnet_small`` (112 x 112, 6 classes); the state encoder is its own trunk
(``layer4``, 4 x 4 x 128), frozen. PPO (a documented deviation from the code's ACER).

Settings chosen for the embedded default, each a documented option of the environment:
``substrate="baseline"`` (the model's mean colour, the substrate of the deletion metric, rather
than the code's noise) and ``mask_visited=True`` (each patch visited once, so the map orders all
``k²`` cells; the code allows no-op revisits).

    python benchmarks/train_default_agents.py --mode deletion            # ~15 min on 2 CPU cores
    python benchmarks/train_default_agents.py --mode insertion --updates 60

Each run writes its checkpoints to ``runs/agents/<name>/`` (resumable: run the same command
again after an interruption) and the final agent to
``saliency_jax/assets/agents/rexl_<mode>_resnet_small/`` (``params/`` orbax, ``agent.json``,
``metrics.json``). ``saliency_jax.rexl.load_rexl_agent(path)`` loads it.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import shutil
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

import jax  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402
from saliency_jax import embedded  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402
from saliency_jax.rl import checkpoint, ppo  # noqa: E402
from saliency_jax.rl import env as rl_env  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
AGENTS = REPO / "saliency_jax" / "assets" / "agents"
MODEL = "resnet_small"
STAGE = "layer4"


def default_config(updates: int, num_envs: int) -> ppo.TrainConfig:
    return ppo.TrainConfig(
        num_envs=num_envs, num_steps=49, num_updates=updates, update_epochs=4,
        num_minibatches=4, lr=3e-4, anneal_lr=True, gamma=1.0, gae_lambda=0.95, clip_eps=0.2,
        ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, reward_scale=0.1,
        pi_layers=(256, 128), vf_layers=(256, 128),
    )


@functools.cache
def _fused_apply(num_classes: int):
    """``(variables, images) -> (probabilities, {STAGE: features})`` from one network pass."""
    module = models.get(MODEL, num_classes=num_classes).build()

    def fused(variables, images, *, mean_rgb, std_rgb):
        x = (images - mean_rgb.reshape(1, 1, 1, 3)) / std_rgb.reshape(1, 1, 1, 3)
        logits, feats = module.apply(variables, x, train=False, features=True)
        return jax.nn.softmax(logits, axis=-1), {STAGE: feats[STAGE]}

    return fused


def load_black_box():
    """``(model_fn, features_fn, fused_fn)`` of the packaged classifier (fused: one pass for both,
    checked equal to the two separate functions)."""
    variables = models.load_variables(embedded.packaged_classifier_dir(MODEL) / "variables",
                                      name=MODEL)
    return black_box(variables)


def black_box(variables):
    model_fn = models.classifier(MODEL, variables)
    features_fn = models.features_fn(MODEL, variables, names=(STAGE,))
    num_classes = int(jax.eval_shape(model_fn, jax.ShapeDtypeStruct((1, 112, 112, 3),
                                                                    np.float32)).shape[-1])
    fused_fn = jax.tree_util.Partial(_fused_apply(num_classes), variables,
                                     **model_fn.keywords)
    x = jax.random.uniform(jax.random.key(0), (2, 112, 112, 3))
    probs, feats = jax.jit(lambda f, x: f(x))(fused_fn, x)
    np.testing.assert_allclose(probs, model_fn(x), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feats[STAGE], features_fn(x)[STAGE], rtol=1e-4, atol=1e-5)
    return model_fn, features_fn, fused_fn


def train_images(n: int, image_size: int = 112) -> np.ndarray:
    data = shapes.generate_arrays("train", n, seed=0, image_size=image_size)
    return data["image"].astype(np.float32) / 255.0


def train(mode: str, *, updates: int, num_envs: int, num_images: int, seed: int,
          checkpoint_every: int, substrate: str, mask_visited: bool, run_root: pathlib.Path,
          out_root: pathlib.Path, progress: bool = True) -> dict:
    name = f"rexl_{mode}_{MODEL}"
    model_fn, features_fn, fused_fn = load_black_box()
    t0 = time.perf_counter()
    images = train_images(num_images)
    env_params = rl_env.make_env_params(
        model_fn, features_fn, images, None, grid=7, mode=mode, substrate=substrate,
        mask_visited=mask_visited, num_class_planes=shapes.NUM_CLASSES, stage=STAGE,
        fused_fn=fused_fn,
    )
    setup_s = time.perf_counter() - t0
    config = default_config(updates, num_envs)
    meta = {"model": MODEL, "dataset": "shapes/train", "num_images": num_images, "seed": seed,
            "features": f"models.features_fn({MODEL!r}, variables, names=({STAGE!r},))"}
    params, metrics = checkpoint.train_agent(
        config, env_params, run_root / name, key=jax.random.key(seed),
        checkpoint_every=checkpoint_every, progress=progress, meta=meta)
    run_dir = run_root / name
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run_dir / "agent", out)
    summary = json.loads((run_dir / "metrics.json").read_text())
    returns = summary["history"]["episode_return"]
    summary.update(
        setup_s=setup_s,
        first_episode_return=float(np.mean(returns[: max(1, len(returns) // 10)])),
        environment={"device": jax.devices()[0].device_kind, "jax": jax.__version__},
        command=" ".join(sys.argv),
    )
    (out / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{name}: {summary['wall_s']:.0f} s, episode return "
          f"{summary['first_episode_return']:.3f} -> {summary['final_episode_return']:.3f}, "
          f"saved {size / 1e6:.1f} MB to {out}")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("deletion", "insertion", "both"), default="deletion")
    parser.add_argument("--updates", type=int, default=80, help="PPO updates (49 steps x envs)")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--num-images", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--substrate", choices=rl_env.SUBSTRATES, default="baseline")
    parser.add_argument("--no-mask-visited", dest="mask_visited", action="store_false")
    parser.add_argument("--run-root", type=pathlib.Path, default=REPO / "runs" / "agents")
    parser.add_argument("--out-root", type=pathlib.Path, default=AGENTS)
    args = parser.parse_args(argv)
    modes = ("deletion", "insertion") if args.mode == "both" else (args.mode,)
    for mode in modes:
        train(mode, updates=args.updates, num_envs=args.num_envs, num_images=args.num_images,
              seed=args.seed, checkpoint_every=args.checkpoint_every, substrate=args.substrate,
              mask_visited=args.mask_visited, run_root=args.run_root, out_root=args.out_root)


if __name__ == "__main__":
    main()
