"""Anytime RISE against fixed-N RISE: queries used and agreement with the N = 8000 map.

For each image (the synthetic test split, packaged ``resnet_small`` at 112², true class; and the
bundled photos with the image's top class), the reference map is fixed-N RISE with
``--reference-masks`` masks (its own key); then, with another key, the anytime map
(``--tolerance``, at most ``--max-masks``) and the fixed-N map with ``N = --max-masks``. Each is
scored by Pearson r with the reference and by its deletion and insertion AUCs minus the
reference map's. Means with 95 % intervals (1.96 standard errors over images).

    nice -n 19 python benchmarks/bench_rise_anytime.py --num-images 100       # the claim
    nice -n 19 python benchmarks/bench_rise_anytime.py --num-images 8 --reference-masks 4000

Writes ``results/rise_anytime.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import saliency_jax as sj  # noqa: E402
from saliency_jax.app import classifiers  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402


def _ci(values):
    values = [float(v) for v in values]
    m = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return dict(mean=m, lo=m - half, hi=m + half, n=len(values))


def _photos(size):
    try:
        import PIL.Image
        import skimage.data
    except ImportError:
        return []
    out = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        im = PIL.Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        out.append((name, np.asarray(im.resize((size, size), PIL.Image.BICUBIC), np.float32) / 255))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--photos", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--reference-masks", type=int, default=8000)
    parser.add_argument("--max-masks", type=int, default=4000)
    parser.add_argument("--tolerance", type=float, default=0.1)
    parser.add_argument("--check-every", type=int, default=250)
    parser.add_argument("--min-masks", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--step", type=int, default=112, help="deletion/insertion pixels/step")
    args = parser.parse_args()
    model_fn, _ = classifiers.load_classifier("resnet_small")
    data = shapes.generate_arrays("test", args.num_images)
    items = [(f"shapes/{i}", jnp.asarray(data["image"][i], jnp.float32) / 255,
              int(data["label"][i])) for i in range(args.num_images)]
    if args.photos:
        for name, photo in _photos(112):
            photo = jnp.asarray(photo)
            items.append((f"photo/{name}", photo, int(jnp.argmax(model_fn(photo[None])[0]))))
    ref_cfg = sj.RiseConfig(num_masks=args.reference_masks, batch_size=args.batch_size)
    fixed_cfg = sj.RiseConfig(num_masks=args.max_masks, batch_size=args.batch_size)
    any_cfg = sj.RiseAnytimeConfig(max_masks=args.max_masks, batch_size=args.batch_size,
                                   check_every=args.check_every, min_masks=args.min_masks,
                                   tolerance=args.tolerance)
    rows = []
    t_start = time.perf_counter()
    for i, (name, image, target) in enumerate(items):
        ref = sj.rise(jax.random.key(10_000 + i), model_fn, image, target, config=ref_cfg)
        anytime = sj.rise_anytime(jax.random.key(i), model_fn, image, target, config=any_cfg)
        fixed = sj.rise(jax.random.key(i), model_fn, image, target, config=fixed_cfg)
        row = dict(image=name, target=target, anytime_masks=int(anytime.num_masks),
                   anytime_relative_error=float(anytime.relative_error))
        aucs = {}
        for label, sal in (("reference", ref), ("anytime", anytime.saliency), ("fixed", fixed)):
            aucs[label] = dict(
                deletion=float(sj.metrics.deletion(model_fn, image, sal, target,
                                                   step=args.step).auc),
                insertion=float(sj.metrics.insertion(model_fn, image, sal, target,
                                                     step=args.step).auc))
        for label, sal in (("anytime", anytime.saliency), ("fixed", fixed)):
            row[f"{label}_r"] = float(np.corrcoef(np.ravel(sal), np.ravel(ref))[0, 1])
            for m in ("deletion", "insertion"):
                row[f"{label}_{m}_diff"] = aucs[label][m] - aucs["reference"][m]
                row[f"{label}_{m}"] = aucs[label][m]
        row["reference_deletion"] = aucs["reference"]["deletion"]
        row["reference_insertion"] = aucs["reference"]["insertion"]
        rows.append(row)
        print(json.dumps(row), flush=True)

    def summary(subset):
        out = {"images": len(subset),
               "anytime_masks": _ci([r["anytime_masks"] for r in subset]),
               "fixed_masks": args.max_masks}
        out["query_ratio_fixed_over_anytime"] = args.max_masks / out["anytime_masks"]["mean"]
        for label in ("anytime", "fixed"):
            out[f"{label}_r"] = _ci([r[f"{label}_r"] for r in subset])
            for m in ("deletion", "insertion"):
                out[f"{label}_{m}"] = _ci([r[f"{label}_{m}"] for r in subset])
                out[f"{label}_{m}_diff"] = _ci([r[f"{label}_{m}_diff"] for r in subset])
        return out

    shapes_rows = [r for r in rows if r["image"].startswith("shapes/")]
    photo_rows = [r for r in rows if r["image"].startswith("photo/")]
    result = dict(
        what="anytime RISE vs fixed-N RISE, agreement with a fixed-N reference map (own key)",
        model="packaged resnet_small, 112x112", reference_masks=args.reference_masks,
        config=dict(max_masks=args.max_masks, tolerance=args.tolerance,
                    check_every=args.check_every, min_masks=args.min_masks,
                    batch_size=args.batch_size, grid=7, p_keep=0.5),
        step=args.step, synthetic=summary(shapes_rows) if shapes_rows else None,
        photos=summary(photo_rows) if len(photo_rows) > 1 else None, rows=rows,
        wall_s=time.perf_counter() - t_start,
        environment=common.environment(), command="nice -n 19 python " + " ".join(sys.argv))
    print(common.write_result("rise_anytime", result))


def table_section(lines: list[str]) -> None:
    """Append the markdown section for ``results/rise_anytime.json``."""
    path = Path(__file__).resolve().parent / "results" / "rise_anytime.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    c = d["config"]

    def f(ci, digits=3):
        return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"

    lines += ["## Anytime RISE: the same map from fewer queries (`bench_rise_anytime.py`)", "",
              f"{d['model']}. Anytime: tolerance {c['tolerance']}, checks every "
              f"{c['check_every']} masks from {c['min_masks']}, at most {c['max_masks']}; fixed-N: "
              f"N = {c['max_masks']}. Against a fixed-N map of {d['reference_masks']} masks "
              "(another key): Pearson r, and deletion / insertion AUC minus the reference's "
              f"(step {d['step']} px). Means [95 % interval].", "",
              "| images | variant | masks | r with reference | Δ deletion AUC | "
              "Δ insertion AUC |", "|---|---|---|---|---|---|"]
    for label, s in (("synthetic", d["synthetic"]), ("photos", d["photos"])):
        if s is None:
            continue
        lines.append(f"| {label} ({s['images']}) | anytime | {f(s['anytime_masks'], 0)} | "
                     f"{f(s['anytime_r'])} | {f(s['anytime_deletion_diff'])} | "
                     f"{f(s['anytime_insertion_diff'])} |")
        lines.append(f"| {label} ({s['images']}) | fixed-N | {s['fixed_masks']} | "
                     f"{f(s['fixed_r'])} | {f(s['fixed_deletion_diff'])} | "
                     f"{f(s['fixed_insertion_diff'])} |")
    env = d["environment"]
    lines += ["", f"Measured on {env['device_kind']}; {d['wall_s']:.0f} s. "
              f"Command: `{d['command']}`.", ""]


if __name__ == "__main__":
    main()
