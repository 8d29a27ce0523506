"""Train the packaged RExL agents (resnet_small, vgg_small) on the synthetic shapes set.

A thin wrapper of :func:`saliency_jax.app.agents.train_rexl` (the same training as
``saliency-jax train-agent --method rexl``), which documents the settings. Dataset-wide agents
(METHODS §3.3, ``class_index = -1``): the shapes training images, target = the classifier's
top-1, one-hot class planes in the state. The black box is the packaged default classifier
``resnet_small`` (112 x 112, 6 classes); the state encoder is its own frozen trunk at ``layer3``
(7 x 7 x 64: one feature cell per patch of the 7 x 7 action grid, as ResNet-50's last stage is
7 x 7 at 224² in the code; ``layer4`` is 4 x 4 here and learned more slowly in trial runs).
Environment steps use one fused network pass for the reward and the next state (same numbers as
the two separate functions, checked at start-up). PPO, a documented deviation from the code's
ACER; hidden widths (128, 64) instead of the code's (256, 128) keep the agent a few MB.

The environment is the reference code's MDP by default: the ``U[-0.5, 0.5)`` noise substrate
(in normalised space, drawn per episode) and revisits allowed (a no-op that costs a step). The
``rexl_masked`` variant is ``--substrate baseline --mask-visited`` (the model's mean colour, the
deletion metric's substrate; each patch once, so the map orders all ``k²`` cells):

    python benchmarks/train_default_agents.py --mode deletion --updates 800     # reference MDP
    python benchmarks/train_default_agents.py --mode deletion --model vgg_small --updates 300 \
        --checkpoint-every 10                                  # the packaged vgg_small agent:
    python benchmarks/train_default_agents.py --mode deletion --model vgg_small --updates 300 \
        --checkpoint-every 10 --stop-now     # stopped at update 80 of 300 (the CPU time box)
    python benchmarks/train_default_agents.py --mode deletion --substrate baseline --mask-visited \
        --updates 600 --name rexl_deletion_masked_resnet_small               # the variant
    python benchmarks/train_default_agents.py --mode insertion --substrate baseline --mask-visited

Each run writes its checkpoints to ``runs/agents/<name>/`` (resumable: run the same command
again after an interruption) and the final agent to
``saliency_jax/assets/agents/rexl_<mode>_<model>/`` (``params/`` orbax, ``agent.json`` with
the classifier's sha256, ``metrics.json``); ``--out-root`` writes it elsewhere. ``--stop-now``
packages a run's latest checkpoint without training further (``metrics.json`` records the
updates done of those scheduled). Inference settings chosen afterwards on the validation split
(``RexlConfig.policy_weight``) are added to ``agent.json`` under ``inference``.
``saliency_jax.app.agents.rexl_agent_for`` (or ``saliency_jax._src.rexl.load_rexl_agent(path)``) loads it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

from saliency_jax._src import rexl_env as rl_env  # noqa: E402
from saliency_jax.app import agents  # noqa: E402
from saliency_jax.app.agents import black_box, classifier_path, variables_digest  # noqa: E402, F401

REPO = pathlib.Path(__file__).resolve().parents[1]
AGENTS = agents.packaged_agent_dir("rexl").parent
MODEL = agents.DEFAULT_MODEL


def train(mode: str, *, classifier=None, model: str = MODEL, name: str | None = None,
          run_root: pathlib.Path = REPO / "runs" / "agents", out_root: pathlib.Path = AGENTS,
          **options) -> dict:
    """Train one agent (``options``: those of :func:`saliency_jax.app.agents.train_rexl`) and write
    it to ``out_root/rexl_<mode>_<model>``."""
    name = name or agents.agent_name(f"rexl_{mode}", model)
    variables = agents.load_classifier_variables(classifier, model=model)
    summary = agents.train_rexl(mode, classifier_variables=variables, run_dir=run_root / name,
                                out=out_root / name, model=model, **options)
    print(f"{name}: {summary['wall_s']:.0f} s, mean episode return (first/last tenth) "
          f"{summary['first_episode_return']:.3f} -> {summary['last_episode_return']:.3f}, "
          f"saved to {summary['agent_dir']}")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("deletion", "insertion", "both"), default="deletion")
    parser.add_argument("--updates", type=int, default=600, help="PPO updates (49 steps x envs)")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--num-images", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--layers", default="128,64", help="hidden widths of both branches")
    parser.add_argument("--model", default=MODEL, help="the classifier's registry name")
    parser.add_argument("--stage", default=None,
                        help="the trunk stage of the state (default: the deepest at least as "
                        "fine as the grid, layer3 for resnet_small)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--substrate", choices=rl_env.SUBSTRATES, default="noise",
                        help="noise: the reference code's U[-0.5, 0.5) (default); baseline: the "
                        "mean colour (the rexl_masked variant)")
    parser.add_argument("--mask-visited", dest="mask_visited", action="store_true",
                        help="each patch once (the rexl_masked variant; the code allows revisits)")
    parser.add_argument("--no-mask-visited", dest="mask_visited", action="store_false")
    parser.add_argument("--init-agent", default=None,
                        help="warm start: an agent folder with the same observation and layers")
    parser.add_argument("--name", default=None,
                        help="agent folder name (default rexl_<mode>_<model>)")
    parser.add_argument("--classifier", default=None,
                        help="classifier variables folder (default: the packaged one)")
    parser.add_argument("--run-root", type=pathlib.Path, default=REPO / "runs" / "agents")
    parser.add_argument("--out-root", type=pathlib.Path, default=AGENTS)
    parser.add_argument("--stop-now", action="store_true",
                        help="train no further: package the run's latest checkpoint as the agent "
                        "(a time-boxed run; metrics.json records the updates done)")
    args = parser.parse_args(argv)
    modes = ("deletion", "insertion") if args.mode == "both" else (args.mode,)
    for mode in modes:
        train(mode, updates=args.updates, num_envs=args.num_envs, num_images=args.num_images,
              seed=args.seed, lr=args.lr, layers=tuple(int(n) for n in args.layers.split(",")),
              stage=args.stage, checkpoint_every=args.checkpoint_every,
              substrate=args.substrate, mask_visited=args.mask_visited,
              classifier=args.classifier, model=args.model, name=args.name,
              init_agent=args.init_agent,
              max_chunks=0 if args.stop_now else None, stop_early=args.stop_now,
              run_root=args.run_root,
              out_root=args.out_root)


if __name__ == "__main__":
    main()
