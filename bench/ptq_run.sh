#!/usr/bin/env bash
# Post-training quantisation, calibrated (issue #6): int8 per-channel on the
# five shared Fashion-MNIST models and mixed W4/W8 on LeNet-5-BN and
# MobileNetV2-tiny, each against fp32 measured in the same run on the 10k
# test images; then ONNX Runtime runs every exported QDQ model
# (bench/ptq_ort_check.py). Results: bench/results/ptq/*.json, *.onnx.
#
# usage: bench/ptq_run.sh [SHRINK_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/shrink}
DATA=${SHRINK_SHARED:-shared}/data/fashion
[ -d "$DATA" ] || DATA=/work/shared/data/fashion
OUT=bench/results/ptq
mkdir -p "$OUT"
for m in lenet300100 lenet5 lenet5_bn mobilenetv2_tiny mobilenetv2_tiny_relu; do
  "$BIN" compress "$DATA/$m.onnx" --recipe recipes/int8-calibrated.toml \
    --calib fashion-mnist:512 --eval fashion-mnist -o "$OUT/$m.int8.onnx" --json > "$OUT/$m.int8.json"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); a=r['accuracy']; print(f\"{sys.argv[2]:<24} int8  fp32 {a['fp32']:.2f}  shrink {a['compressed']:.2f}  bytes {r['bytes']['compressed']:.0f}\")" "$OUT/$m.int8.json" "$m"
done
for m in lenet5_bn mobilenetv2_tiny; do
  "$BIN" compress "$DATA/$m.onnx" --recipe recipes/w4a8-mixed.toml \
    --calib fashion-mnist:512 --eval fashion-mnist -o "$OUT/$m.w4a8.onnx" --json > "$OUT/$m.w4a8.json"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); a=r['accuracy']; print(f\"{sys.argv[2]:<24} w4a8  fp32 {a['fp32']:.2f}  shrink {a['compressed']:.2f}  bytes {r['bytes']['compressed']:.0f}\")" "$OUT/$m.w4a8.json" "$m"
done
python3 bench/ptq_ort_check.py "$OUT"
