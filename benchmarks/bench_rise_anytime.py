"""Anytime RISE against fixed-N RISE: queries used and agreement with an N = 8000 map.

Protocol (issue 20 item 2). Synthetic set: ``saliency_shapes`` test[:--num-images] at 112²,
packaged ``resnet_small``, true class. Per image ``i``:

* reference: fixed-N RISE, ``N = --reference-masks`` (8000), key ``10_000 + i``;
* fixed-N RISE with key ``i`` at N = 1000, 2000, 4000 (4000 = the comparison point), and at the
  multiples of ``--check-every`` just below and above anytime's mean N. With one key, mask ``j``
  is ``fold_in(key, j)`` for every N, so the fixed-N maps at N <= 4000 are prefixes of one mask
  stream: one 4000-mask pass in blocks of ``--check-every`` gives all of them (checked against
  ``sj.rise`` on the first ``--verify-prefix`` images);
* the same mask stream's control-variate maps (``f̄ + Cov(f, M) / p``, the estimator of
  ``sj.rise_anytime``) at fixed N = 1000 and 2000, to tell what the estimator gives from what
  the stop gives;
* anytime: ``sj.rise_anytime`` with key ``i``, at most 4000 masks, checks every 250 from 500,
  the control variate unless ``--plain``, and ONE tolerance chosen beforehand on a validation
  set (``saliency_shapes`` train[:--validation-images], other keys): the largest tolerance of
  ``--tolerances`` whose mean Pearson r with the validation reference is at least plain fixed-N
  4000's minus ``--match-slack`` (0.005). On validation the anytime map at each tolerance is the
  prefix at the stop the criterion gives, computed in float64 from the same block pass; on the
  test set the reported anytime map is ``sj.rise_anytime``'s own (its stop is compared with the
  float64 prediction).

Scores: Pearson r with the reference; deletion and insertion AUC (``--step`` px per step);
paired differences against fixed N = 4000. Means with 95 % t-intervals over images.

    nice -n 19 python benchmarks/bench_rise_anytime.py                       # the claim
    nice -n 19 python benchmarks/bench_rise_anytime.py --num-images 4 --validation-images 4

Writes ``results/rise_anytime.json`` (also every ``--checkpoint-every`` test images).

``--photos W.npz``: the same protocol on the six bundled photos at 224² with EfficientNet-Lite0
(the real ImageNet weights, a torch state dict exported by ``peers_worker.py --library export
--model efficientnet_lite0 --weights W.npz`` in the peers' environment), target the top-1 class
of the photo, no validation: the tolerance is given (``--tolerance``, the one chosen on the
synthetic validation set), step 224. Writes ``results/rise_anytime_photos.json``.

    python benchmarks/bench_rise_anytime.py --photos W.npz --tolerance 0.04

The anytime settings (at most 4000 masks, checks every 250 from 500, tolerance 0.04) are
``sj.RiseAnytimeConfig()``'s defaults. ``--stops-only`` runs only ``sj.rise_anytime`` with those
defaults on the test images and compares its stops with ``results/rise_anytime.json``'s
(``results/rise_anytime_stops.json``; no reference maps, minutes instead of an hour):

    nice -n 19 python benchmarks/bench_rise_anytime.py --stops-only --num-images 100
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
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
import scipy.stats  # noqa: E402

import saliency_jax as sj  # noqa: E402
from saliency_jax._src import baselines, masks, rise, sharding  # noqa: E402
from saliency_jax._src.model_fn import as_pytree_fn  # noqa: E402
from saliency_jax.app import classifiers  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402

GRID, P_KEEP, FIXED_N = 7, 0.5, 4000


def _ci(values):
    """Mean and 95 % t-interval over images."""
    values = [float(v) for v in values]
    m = statistics.fmean(values)
    n = len(values)
    half = (scipy.stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
            if n > 1 else 0.0)
    return dict(mean=m, lo=m - half, hi=m + half, n=n, min=min(values), max=max(values))


_SUMS = ("f", "y", "z", "yy", "yz", "zz", "ybar", "zbar", "ybar_ybar", "ybar_zbar", "zbar_zbar")


@functools.partial(jax.jit, static_argnames=("block", "batch_size"))
def _block_sums(key, model_fn, image, target, baseline, start, *, block, batch_size):
    """Raw sums over masks ``start .. start + block - 1`` of ``f``, ``y = f M / p``, ``z = M /
    p``, their products per pixel, and of the pixel means ``ȳ``, ``z̄`` (names in ``_SUMS``);
    chunks split over the devices as in ``sj.rise``."""

    def chunk(ops, indices, valid):
        key, model_fn, image, target, baseline, start = ops
        m = masks.rise_masks_at(key, start + indices, grid=GRID, p_keep=P_KEEP,
                                image_hw=image.shape[:2])
        on = valid.astype(jnp.float32)
        f = on * rise._masked_scores(model_fn, image, m, baseline)[:, target]
        z = on[:, None, None] * m / P_KEEP
        y = f[:, None, None] * z
        yb, zb = jnp.mean(y, axis=(1, 2)), jnp.mean(z, axis=(1, 2))
        return (jnp.sum(f), jnp.sum(y, 0), jnp.sum(z, 0), jnp.sum(y * y, 0), jnp.sum(y * z, 0),
                jnp.sum(z * z, 0), jnp.sum(yb), jnp.sum(zb), jnp.sum(yb * yb), jnp.sum(yb * zb),
                jnp.sum(zb * zb))

    return sharding.sharded_chunk_sum(chunk, (key, model_fn, image, target, baseline, start),
                                      num_items=block, chunk_size=batch_size)


def _estimate(t, n, control_variate):
    """The map, ``r_n`` (float64) and whether the scores did not vary (``se`` at float32's
    resolution of the map, as ``sj.rise_anytime``: then ``r_n = 0`` and no stop) from the raw
    sums ``t`` of ``n`` masks."""
    f, y, z = t["f"] / n, t["y"] / n, t["z"] / n
    beta = f if control_variate else 0.0
    sal = f + (y - f * z) * n / (n - 1) if control_variate else y

    def comoment(a, b, ab):  # Σ (a - ā)(b - b̄)
        return t[ab] - t[a] * t[b] / n

    noise = (np.sum(comoment("y", "y", "yy") - 2 * beta * comoment("y", "z", "yz")
                    + beta * beta * comoment("z", "z", "zz"))
             - sal.size * (comoment("ybar", "ybar", "ybar_ybar")
                           - 2 * beta * comoment("ybar", "zbar", "ybar_zbar")
                           + beta * beta * comoment("zbar", "zbar", "zbar_zbar")))
    se_sq = max(noise, 0.0) / (n * (n - 1))
    if se_sq <= 1e-10 * np.sum(np.square(sal)):
        return sal, 0.0, True
    return sal, math.sqrt(se_sq / np.sum(np.square(sal - sal.mean()))), False


def _stream(key, model_fn, image, target, args):
    """Per estimator (``"plain"``, ``"cv"``): prefix maps ``f32[B, h, w]``, the criterion
    ``r_n`` (float64) and the no-variation flags ``bool[B]`` at every block end."""
    baseline = baselines.resolve_baseline(model_fn, image, None)
    totals = dict.fromkeys(_SUMS, 0.0)
    out = {"plain": ([], [], []), "cv": ([], [], [])}
    for b in range(FIXED_N // args.check_every):
        sums = _block_sums(*sharding.replicate((key, model_fn, image, jnp.int32(target),
                                                baseline, jnp.int32(b * args.check_every))),
                           block=args.check_every, batch_size=args.batch_size)
        for name, value in zip(_SUMS, sums, strict=True):
            totals[name] = totals[name] + np.asarray(value, np.float64)
        n = (b + 1) * args.check_every
        for label, (prefixes, rs, flat) in out.items():
            sal, r, exact = _estimate(totals, n, label == "cv")
            prefixes.append(sal.astype(np.float32))
            rs.append(r)
            flat.append(exact)
    return {label: (np.stack(p), np.asarray(r), np.asarray(e))
            for label, (p, r, e) in out.items()}


def _predicted_stop(rs, exact, tolerance, args):
    """Block index where the criterion stops at ``tolerance`` (the last block if never); a
    block whose scores did not vary never stops."""
    threshold = tolerance * (2.0 - tolerance)
    for b, (r, flat) in enumerate(zip(rs, exact, strict=True)):
        if (b + 1) * args.check_every >= args.min_masks and not flat and r * r < threshold:
            return b
    return len(rs) - 1


def _pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _aucs(model_fn, image, sal, target, step):
    sal = jnp.asarray(sal)
    return (float(sj.metrics.deletion(model_fn, image, sal, target, step=step).auc),
            float(sj.metrics.insertion(model_fn, image, sal, target, step=step).auc))


def _items(split, count):
    data = shapes.generate_arrays(split, count)
    return [(f"shapes/{split}/{i}", jnp.asarray(data["image"][i], jnp.float32) / 255,
             int(data["label"][i])) for i in range(count)]


def _photo_items(model_fn, count):
    from saliency_jax.data import readers

    source = readers.load("photos", image_size=224)
    items = []
    for i in range(min(count, len(source))):
        example = source[i]
        image = jnp.asarray(example["image"], jnp.float32) / 255
        target = int(jnp.argmax(model_fn(image[None])[0]))
        items.append((f"photos/{example['id']}", image, target))
    return items


def _validate(model_fn, args, log):
    """Choose the tolerance on the validation images by the rule of the docstring."""
    ref_cfg = sj.RiseConfig(num_masks=args.reference_masks, batch_size=args.batch_size)
    rows = []
    for j, (name, image, target) in enumerate(_items("train", args.validation_images)):
        ref = np.asarray(sj.rise(jax.random.key(60_000 + j), model_fn, image, target,
                                 config=ref_cfg))
        streams = _stream(jax.random.key(50_000 + j), model_fn, image, target, args)
        prefixes, rs, exact = streams[args.estimator]
        row = dict(image=name, fixed_r=_pearson(streams["plain"][0][-1], ref),
                   criterion_r=rs.tolist(), exact=exact.tolist(),
                   r_by_block=[_pearson(p, ref) for p in prefixes])
        rows.append(row)
        log(dict(validation=name, fixed_r=row["fixed_r"], r_final=float(rs[-1])))
    fixed_r = statistics.fmean(r["fixed_r"] for r in rows)
    table = []
    for tol in args.tolerances:
        stops = [_predicted_stop(np.asarray(r["criterion_r"]), np.asarray(r["exact"]), tol, args)
                 for r in rows]
        table.append(dict(
            tolerance=tol, mean_masks=statistics.fmean((s + 1) * args.check_every for s in stops),
            mean_r=statistics.fmean(r["r_by_block"][s] for r, s in zip(rows, stops, strict=True))))
    ok = [t for t in table if t["mean_r"] >= fixed_r - args.match_slack]
    chosen = max(t["tolerance"] for t in ok) if ok else min(args.tolerances)
    return dict(images=len(rows), split="saliency_shapes train", fixed_4000_mean_r=fixed_r,
                estimator=args.estimator,
                rule=f"largest tolerance with mean r >= plain fixed-N 4000's - "
                     f"{args.match_slack}",
                candidates=table, chosen=chosen, rows=rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--validation-images", type=int, default=16)
    parser.add_argument("--reference-masks", type=int, default=8000)
    parser.add_argument("--check-every", type=int, default=250)
    parser.add_argument("--min-masks", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--tolerances", type=float, nargs="+",
                        default=[0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025,
                                 0.03, 0.04, 0.05, 0.075, 0.1])
    parser.add_argument("--match-slack", type=float, default=0.005)
    parser.add_argument("--tolerance", type=float, default=None,
                        help="skip the validation and use this tolerance")
    parser.add_argument("--plain", dest="estimator", action="store_const", const="plain",
                        default="cv", help="anytime without the control variate")
    parser.add_argument("--verify-prefix", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--step", type=int, default=None,
                        help="deletion/insertion pixels/step (default: the image side)")
    parser.add_argument("--stops-only", action="store_true",
                        help="only sj.rise_anytime with the library's default config on the test "
                             "images; compare its stops with results/rise_anytime.json's")
    parser.add_argument("--photos", default=None, metavar="W.npz",
                        help="the bundled photos with EfficientNet-Lite0 (these torch weights)")
    args = parser.parse_args()
    if args.photos is not None and args.tolerance is None:
        parser.error("--photos needs --tolerance (chosen on the synthetic validation set)")
    sj.sharding.set_cpu_devices()  # a JAX CPU device per core; no effect on an accelerator
    if args.photos is None:
        model_fn = as_pytree_fn(classifiers.load_classifier("resnet_small")[0])
        test_items = _items("test", args.num_images)
        args.model = "packaged resnet_small, 112x112, saliency_shapes test, true class"
    else:
        from saliency_jax import models

        variables = models.convert_state_dict(
            "efficientnet_lite0", dict(np.load(args.photos)))
        model_fn = as_pytree_fn(sj.classifier("efficientnet_lite0", variables))
        test_items = _photo_items(model_fn, args.num_images)
        args.model = ("EfficientNet-Lite0 (the real ImageNet weights), the bundled photos "
                      "224x224, top-1 class")
    if args.step is None:
        args.step = int(test_items[0][1].shape[0])
    t_start = time.perf_counter()

    def log(obj):
        print(json.dumps(obj), flush=True)

    if args.stops_only:
        return _stops_only(model_fn, test_items, args, log, t_start)
    validation = None
    if args.tolerance is None:
        validation = _validate(model_fn, args, log)
        tolerance = validation["chosen"]
        log({k: v for k, v in validation.items() if k != "rows"})
    else:
        tolerance = args.tolerance
    ref_cfg = sj.RiseConfig(num_masks=args.reference_masks, batch_size=args.batch_size)
    any_cfg = sj.RiseAnytimeConfig(max_masks=FIXED_N, batch_size=args.batch_size,
                                   check_every=args.check_every, min_masks=args.min_masks,
                                   tolerance=tolerance, grid=GRID, p_keep=P_KEEP,
                                   control_variate=args.estimator == "cv")
    rows, store = [], []
    prefix_checks = []
    num_images = len(test_items)
    for i, (name, image, target) in enumerate(test_items):
        key = jax.random.key(i)
        ref = np.asarray(sj.rise(jax.random.key(10_000 + i), model_fn, image, target,
                                 config=ref_cfg))
        streams = _stream(key, model_fn, image, target, args)
        prefixes = streams["plain"][0]
        any_prefixes, rs, exact = streams[args.estimator]
        if i < args.verify_prefix:
            direct = np.asarray(sj.rise(key, model_fn, image, target, config=sj.RiseConfig(
                num_masks=FIXED_N, batch_size=args.batch_size)))
            prefix_checks.append(float(np.max(np.abs(direct - prefixes[-1]))
                                       / np.max(np.abs(direct))))
        anytime = sj.rise_anytime(key, model_fn, image, target, config=any_cfg)
        n_any = int(anytime.num_masks)
        predicted = (_predicted_stop(rs, exact, tolerance, args) + 1) * args.check_every
        any_map = np.asarray(anytime.saliency)
        row = dict(image=name, target=target, anytime_masks=n_any, predicted_masks=predicted,
                   anytime_relative_error=float(anytime.relative_error),
                   anytime_vs_prefix=float(np.max(np.abs(any_map - any_prefixes[
                       n_any // args.check_every - 1])) / np.max(np.abs(any_map)))
                   if n_any % args.check_every == 0 else None,
                   criterion_r=rs.tolist(), exact=exact.tolist())
        ref_auc = _aucs(model_fn, image, ref, target, args.step)
        row["reference_deletion"], row["reference_insertion"] = ref_auc
        maps = {"anytime": any_map}
        maps.update({f"fixed_{n}": prefixes[n // args.check_every - 1] for n in (1000, 2000, 4000)})
        maps.update({f"cv_fixed_{n}": streams["cv"][0][n // args.check_every - 1]
                     for n in (1000, 2000)})
        for label, sal in maps.items():
            row[f"{label}_r"] = _pearson(sal, ref)
            row[f"{label}_deletion"], row[f"{label}_insertion"] = _aucs(
                model_fn, image, sal, target, args.step)
        rows.append(row)
        store.append((image, target, prefixes, ref))
        log({k: v for k, v in row.items() if k not in ("criterion_r", "exact")})
        if (i + 1) % args.checkpoint_every == 0 or i + 1 == num_images:
            _write(rows, store, model_fn, args, tolerance, validation, prefix_checks, t_start,
                   final=i + 1 == num_images)


def _stops_only(model_fn, test_items, args, log, t_start):
    """``sj.rise_anytime`` with ``sj.RiseAnytimeConfig()``'s defaults (only ``batch_size`` and
    the stored tolerance passed) against the stored run's stops, image by image; writes
    ``results/rise_anytime_stops.json``."""
    stored_path = Path(__file__).resolve().parent / "results" / "rise_anytime.json"
    stored = json.loads(stored_path.read_text())
    default = sj.RiseAnytimeConfig()
    for name in ("max_masks", "check_every", "min_masks", "tolerance", "grid", "p_keep",
                 "control_variate"):
        if getattr(default, name) != stored["config"][name]:
            raise SystemExit(f"bench_rise_anytime: error: the library default {name}="
                             f"{getattr(default, name)} is not the stored run's "
                             f"{stored['config'][name]}")
    cfg = sj.RiseAnytimeConfig(batch_size=args.batch_size)
    rows = []
    for i, (name, image, target) in enumerate(test_items):
        old = stored["rows"][i]
        if old["image"] != name or old["target"] != target:
            raise SystemExit(f"bench_rise_anytime: error: image {i} is {name}, stored "
                             f"{old['image']}")
        out = sj.rise_anytime(jax.random.key(i), model_fn, image, target, config=cfg)
        row = dict(image=name, masks=int(out.num_masks), stored_masks=old["anytime_masks"],
                   relative_error=float(out.relative_error),
                   stored_relative_error=old["anytime_relative_error"])
        rows.append(row)
        log(row)
    same = sum(r["masks"] == r["stored_masks"] for r in rows)
    result = dict(
        what="sj.rise_anytime with the library's default config: its stops against the stored "
             "benchmark run's (results/rise_anytime.json)",
        model=args.model, images=len(rows), config=dataclasses.asdict(cfg),
        same_stops=same, mean_masks=statistics.fmean(r["masks"] for r in rows),
        stored_mean_masks=statistics.fmean(r["stored_masks"] for r in rows),
        max_abs_relative_error_diff=max(abs(r["relative_error"] - r["stored_relative_error"])
                                        for r in rows),
        rows=rows, wall_s=time.perf_counter() - t_start, environment=common.environment(),
        command="nice -n 19 python " + " ".join(sys.argv))
    print(common.write_result("rise_anytime_stops", result), flush=True)


_MATCHED_CACHE: dict = {}


def _write(rows, store, model_fn, args, tolerance, validation, prefix_checks, t_start, *, final):
    mean_n = statistics.fmean(r["anytime_masks"] for r in rows)
    below = max(args.check_every, int(mean_n // args.check_every) * args.check_every)
    matched = sorted({below, min(FIXED_N, below + args.check_every)})
    for i, (image, target, prefixes, ref) in enumerate(store):
        for n in matched:
            if (i, n) not in _MATCHED_CACHE:
                sal = prefixes[n // args.check_every - 1]
                _MATCHED_CACHE[i, n] = (_pearson(sal, ref),
                                        *_aucs(model_fn, image, sal, target, args.step))
    methods = ["fixed_1000", "fixed_2000", "fixed_4000", "cv_fixed_1000", "cv_fixed_2000",
               "anytime"]
    per = {m: dict(masks=None if m == "anytime" else int(m.rsplit("_", 1)[1])) for m in methods}
    values = {m: {q: [r[f"{m}_{q}"] for r in rows] for q in ("r", "deletion", "insertion")}
              for m in methods}
    for n in matched:
        m = f"fixed_{n}_at_anytime_mean"
        methods.append(m)
        per[m] = dict(masks=n)
        values[m] = {q: [_MATCHED_CACHE[i, n][k] for i in range(len(rows))]
                     for k, q in enumerate(("r", "deletion", "insertion"))}
    summary = {}
    for m in methods:
        s = dict(per[m])
        if m == "anytime":
            s["masks"] = _ci([r["anytime_masks"] for r in rows])
        for q in ("r", "deletion", "insertion"):
            s[q] = _ci(values[m][q])
            s[f"{q}_minus_fixed_4000"] = _ci(np.subtract(values[m][q], values["fixed_4000"][q]))
        summary[m] = s
    summary["reference"] = {q: _ci([r[f"reference_{q}"] for r in rows])
                            for q in ("deletion", "insertion")}
    anytime_vs_matched = {
        f"anytime_minus_fixed_{n}": {q: _ci(np.subtract(values["anytime"][q],
                                                        values[f"fixed_{n}_at_anytime_mean"][q]))
                                     for q in ("r", "deletion", "insertion")}
        for n in matched}
    result = dict(
        what="anytime RISE vs fixed-N RISE: queries and agreement with a fixed-N reference map",
        protocol=__doc__.split("\n\n")[1].replace("\n", " "),
        model=args.model,
        images=len(rows), complete=final, reference_masks=args.reference_masks,
        config=dict(max_masks=FIXED_N, tolerance=tolerance, check_every=args.check_every,
                    control_variate=args.estimator == "cv",
                    min_masks=args.min_masks, batch_size=args.batch_size, grid=GRID,
                    p_keep=P_KEEP),
        tolerance_validation=validation, step=args.step, summary=summary,
        query_ratio_fixed_4000_over_anytime=FIXED_N / mean_n,
        anytime_vs_fixed_at_its_mean_n=anytime_vs_matched,
        anytime_stop_equals_float64_prediction=sum(r["anytime_masks"] == r["predicted_masks"]
                                                   for r in rows),
        prefix_vs_sj_rise_max_rel_diff=prefix_checks,
        rows=rows, wall_s=time.perf_counter() - t_start,
        environment=common.environment(), command="nice -n 19 python " + " ".join(sys.argv))
    name = "rise_anytime" if args.photos is None else "rise_anytime_photos"
    print(common.write_result(name, result), flush=True)


def table_section(lines: list[str]) -> None:
    """Append the markdown sections for ``results/rise_anytime.json`` and
    ``rise_anytime_photos.json``."""
    for name, what in (("rise_anytime", "synthetic set"), ("rise_anytime_photos", "photos")):
        path = Path(__file__).resolve().parent / "results" / f"{name}.json"
        if path.exists():
            d = json.loads(path.read_text())
            if "summary" in d:  # not an older layout
                _section(lines, d, what)


def _section(lines, d, what):
    c, s = d["config"], d["summary"]

    def f(ci, digits=3):
        return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"

    v = d["tolerance_validation"]
    chose = (f"tolerance {c['tolerance']}, chosen on {v['images']} {v['split']} images as the "
             f"{v['rule']} ({v['fixed_4000_mean_r']:.3f} there)" if v else
             f"tolerance {c['tolerance']} (given)")
    lines += [f"## Anytime RISE: the same map from fewer queries, {what} "
              "(`bench_rise_anytime.py`)", "",
              f"{d['model']}, {d['images']} images{'' if d['complete'] else ' (partial run)'}. "
              f"Reference: fixed-N RISE, N = {d['reference_masks']}, its own key. Anytime: "
              f"{chose}; checks every {c['check_every']} masks from {c['min_masks']}, at most "
              f"{c['max_masks']}; it stops when 1 - sqrt(1 - r²) < tolerance, r the centred "
              "map's relative standard error (1 - the estimated correlation with the converged "
              "map). Plain: RISE's mean of f M / p; control variate: f̄ + Cov(f, M) / p, the "
              "same expectation. "
              f"Deletion / insertion step {d['step']} px. Means [95 % t-interval]; Δ = "
              "paired difference against plain fixed N = 4000.", "",
              "| method | masks | r with reference | Δ r | deletion AUC | Δ deletion | "
              "insertion AUC | Δ insertion |", "|---|---|---|---|---|---|---|---|"]
    for m, row in s.items():
        if m == "reference":
            continue
        masks_ = (f"{row['masks']['mean']:.0f} ({row['masks']['min']:.0f}–"
                  f"{row['masks']['max']:.0f})" if isinstance(row["masks"], dict)
                  else str(row["masks"]))
        label = (m.replace("_at_anytime_mean", " (≈ anytime's mean N)")
                 .replace("cv_fixed_", "control variate, fixed N = ")
                 .replace("fixed_", "plain, fixed N = "))
        if m == "anytime":
            label = ("anytime, control variate" if c.get("control_variate")
                     else "anytime, plain")
        lines.append(f"| {label} | {masks_} | {f(row['r'])} | {f(row['r_minus_fixed_4000'])} | "
                     f"{f(row['deletion'])} | "
                     f"{f(row['deletion_minus_fixed_4000'])} | {f(row['insertion'])} | "
                     f"{f(row['insertion_minus_fixed_4000'])} |")
    ref = s["reference"]
    lines += ["", f"Reference map: deletion {f(ref['deletion'])}, insertion "
              f"{f(ref['insertion'])}. Queries: fixed 4000 / anytime mean = "
              f"{d['query_ratio_fixed_4000_over_anytime']:.2f}×. Anytime minus fixed-N at "
              "about its mean N (paired): " + "; ".join(
                  f"N = {k.rsplit('_', 1)[1]}: Δr {f(x['r'])}, Δ deletion {f(x['deletion'])}, "
                  f"Δ insertion {f(x['insertion'])}"
                  for k, x in d["anytime_vs_fixed_at_its_mean_n"].items()) + ".", ""]
    env = d["environment"]
    lines += [f"Measured on {env['device_kind']}, load average "
              f"{env['load_average'][0]:.1f}; {d['wall_s']:.0f} s. Command: `{d['command']}`.",
              ""]


if __name__ == "__main__":
    main()
