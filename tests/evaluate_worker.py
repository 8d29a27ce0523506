"""One process of a small ``jax.distributed`` evaluation (started by
``test_evaluate_multiprocess.py``): the tiny CNN on rendered shapes, through the CLI's launch code
and :func:`saliency_jax.app.evaluate.run_evaluate`.

    python tests/evaluate_worker.py OUT --num-processes 2 --process-id 0 --port 12345
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--heartbeat-timeout", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=["rise", "occlusion", "random"])
    args = parser.parse_args(argv)

    from saliency_jax.app import cli

    coordinated = args.port is not None
    cli._init_distributed(argparse.Namespace(
        coordinator=f"127.0.0.1:{args.port}" if coordinated else None,
        num_processes=args.num_processes, process_id=args.process_id, distributed=False,
        heartbeat_timeout=args.heartbeat_timeout))

    import jax

    from saliency_jax import testing
    from saliency_jax.app import evaluate as ev
    from saliency_jax.data import shapes

    model_fn = testing.tiny_cnn(jax.random.key(0), (args.size, args.size))[0]
    dataset = [shapes.render_example(0, "test", i, image_size=args.size)
               for i in range(args.num_images)]
    config = ev.EvaluateConfig(model="tiny", methods=tuple(args.methods),
                               num_images=args.num_images, num_masks=24, image_size=args.size,
                               target="top1", batch_size=args.batch_size)
    summary = ev.run_evaluate(
        config, args.out, model_fn=model_fn, dataset=dataset, progress=False,
        process_index=None if coordinated else args.process_id,
        process_count=None if coordinated else args.num_processes)
    print(f"process {jax.process_index()}/{jax.process_count()}: local devices "
          f"{len(jax.local_devices())}, {'merged' if summary else 'shard done'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
