"""Every explainer and metric on tiny models, for the multi-process test (tests/test_multihost.py).

Run as one process of a ``jax.distributed`` job::

    python multihost_worker.py OUT.npz --methods rise,deletion \\
        --coordinator 127.0.0.1:PORT --num-processes 2 --process-id I

(the environment sets ``JAX_PLATFORMS=cpu`` and the local device count), or import
:func:`compute` for the same calls in one process. Each result is a numpy array read with
``sj.sharding.gather``; ``spans/NAME`` records whether the result lives on every device of every
process (i.e. the call really ran on the global mesh).
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

HW = (16, 16)
METHODS = ("rise", "rise_all", "occlusion", "lime", "gradcam", "deletion", "insertion",
           "rexl", "rexl_env", "rlcam", "rlcam_greedy", "rlcam_env", "rise_batch",
           "rise_batch_local", "localization")


def compute(methods=METHODS) -> dict[str, np.ndarray]:
    """The results of ``methods`` (names of :data:`METHODS`) as numpy arrays."""
    import saliency_jax as sj

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    k = jax.random.split(jax.random.key(3), 6)
    model_fn, _ = sj.testing.tiny_cnn(k[0], HW)
    images = jax.random.uniform(k[1], (4, *HW, 3))
    image = images[0]
    rise_cfg = sj.RiseConfig(num_masks=60, grid=4, p_keep=0.5, batch_size=8)  # 8 chunks
    rexl_cfg = sj.RexlConfig(grid=4, pi_layers=(16,), vf_layers=(16,))
    rlcam_cfg = sj.RlcamConfig(grid=4, horizon=3, batch_size=8, pi_layers=(16,),
                                  vf_layers=(16,))
    segments = (jnp.arange(HW[0])[:, None] // 4) * 4 + jnp.arange(HW[1])[None, :] // 4
    out, results = {}, {}
    sal = None

    def saliency():
        nonlocal sal
        if sal is None:
            sal = sj.rise(k[2], model_fn, image, 1, config=rise_cfg)
        return sal

    for name in methods:
        if name == "rise":
            r = saliency()
        elif name == "rise_all":
            r = sj.rise_all_classes(k[2], model_fn, image, config=rise_cfg)
        elif name == "occlusion":
            r = sj.occlusion(k[2], model_fn, image, 1, config=sj.OcclusionConfig(
                window=5, stride=3, batch_size=4))  # 25 windows, 7 chunks
        elif name == "lime":
            r = sj.lime(k[2], model_fn, image, 1, segments=segments, config=sj.LimeConfig(
                num_samples=50, max_segments=16, batch_size=8))
        elif name == "gradcam":
            r = sj.gradcam(k[2], model_fn, image, 1, cam_model=sj.testing.tiny_cam(model_fn))
        elif name in ("deletion", "insertion"):
            fn = getattr(sj.metrics, name)
            r = fn(model_fn, image, saliency(), 1, step=16, batch_size=4)  # 17 points
            r = {"scores": r.scores, "auc": r.auc}
        elif name == "rexl":
            features_fn = sj.patch_features(4)
            params = sj.init_rexl_agent(k[3], rexl_cfg, features_fn, HW)
            r = sj.rexl(k[2], model_fn, image, 1, config=rexl_cfg, agent_params=params,
                          features_fn=features_fn, deterministic=False)
        elif name == "rexl_env":
            p = sj.rl.make_rexl_env_params(model_fn, sj.patch_features(4), images, grid=4,
                                         batch_size=3)
            r = {"targets": p.targets, "features": p.original_features}
        elif name == "rlcam":
            params = sj.init_rlcam_agent(k[4], rlcam_cfg)
            e = sj.rlcam_explain(k[2], model_fn, image, 1, config=rlcam_cfg,
                                    agent_params=params)
            r = {"saliency": e.saliency, "mask": e.mask, "queries": e.num_queries}
        elif name == "rlcam_greedy":
            e = sj.rlcam_greedy_explain(k[2], model_fn, image, 1, config=rlcam_cfg)
            r = {"saliency": e.saliency, "mask": e.mask, "steps": e.steps}
        elif name == "rlcam_env":
            p = sj.rl.make_rlcam_env_params(model_fn, images, config=rlcam_cfg)
            r = {"targets": p.targets, "look_keep": p.init_look_keep,
                 "look_remove": p.init_look_remove}
        elif name == "localization":  # on a (global) map and a numpy ground truth
            gt = np.zeros(HW, bool)
            gt[2:9, 4:12] = True
            r = {"iou": sj.metrics.iou(saliency(), gt, threshold=0.3, mode="top_k"),
                 "f1": sj.metrics.f1(saliency(), gt, threshold=0.5),
                 "pointing": sj.metrics.pointing_game(saliency(), gt, tolerance=2)}
        elif name == "rise_batch":  # images sharded over all devices, one jit(vmap(...))
            batch = sj.sharding.shard_batch(images)
            fn = jax.jit(jax.vmap(lambda x: sj.rise(k[2], model_fn, x, 1, config=rise_cfg)))
            r = fn(batch)
        elif name == "rise_batch_local":  # the same, each process passing only its own rows
            rows = len(images) // jax.process_count()
            mine = images[jax.process_index() * rows:(jax.process_index() + 1) * rows]
            batch = sj.sharding.shard_batch(mine, process_local=True)
            fn = jax.jit(jax.vmap(lambda x: sj.rise(k[2], model_fn, x, 1, config=rise_cfg)))
            r = fn(batch)
        results[name] = r

    for name, r in results.items():
        leaves = r if isinstance(r, dict) else {"": r}
        for leaf_name, leaf in leaves.items():
            key = f"{name}/{leaf_name}" if leaf_name else name
            out[key] = sj.sharding.gather(leaf)
            out[f"spans/{key}"] = np.array(len(leaf.sharding.device_set) == jax.device_count())
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    args = parser.parse_args(argv)
    if args.coordinator:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=args.coordinator,
                                   num_processes=args.num_processes, process_id=args.process_id)
    out = compute(tuple(m for m in args.methods.split(",") if m))
    out["process_count"] = np.array(jax.process_count())
    out["device_count"] = np.array(jax.device_count())
    out["local_device_count"] = np.array(jax.local_device_count())
    np.savez(args.out, **out)
    if args.coordinator:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("multihost_worker done")  # neither exits early
        jax.distributed.shutdown()
    print(f"process {jax.process_index()}: wrote {len(out)} arrays to {args.out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
