#!/usr/bin/env bash
# Issue 20 item 5, ready for a lent GPU (not run: no device was drawn for this task).
# `saliency-jax bench` (ResNet50 224², N = 4000) and the saliency-jax part of bench_peers'
# RISE timing, absolute figures with the device name, into $OUT (or benchmarks/results/gpu).
# The device has no network: install from wheels carried along, or use an image with jax[cuda].
set -euo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
python -c "import jax; print(jax.devices())" | tee "$OUT/devices.txt"
for B in 100 250; do
  timeout 240 python -m saliency_jax.app.bench --model resnet50 --size 224 --num-masks 4000 \
    --batch-size $B --repeats 3 --json "$OUT/bench_resnet50_b$B.json" | tee "$OUT/bench_b$B.txt"
done
timeout 120 python -m saliency_jax.app.bench --model resnet50 --size 224 --num-masks 4000 \
  --batch-size 250 --repeats 3 --dtype bfloat16 --json "$OUT/bench_resnet50_bf16.json" \
  | tee "$OUT/bench_bf16.txt"
