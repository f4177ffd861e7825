#!/usr/bin/env bash
# QOperator export (issue #6): `shrink compress --qoperator` on the five shared
# Fashion-MNIST models with the int8-calibrated recipe. shrink evaluates fp32,
# the QDQ model and the QOperator graph (its own runtime, QLinearConv and the
# com.microsoft contrib ops) on the 10k test images in one run; then ONNX
# Runtime runs each written QOperator file and bench/ptq_ort_check.py compares
# ORT's accuracy with shrink's accuracy on the QDQ model (±0.05 pt).
# Results: bench/results/ptq_qop/*.json, *.onnx.
#
# usage: bench/ptq_qoperator.sh [SHRINK_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/shrink}
DATA=${SHRINK_SHARED:-shared}/data/fashion
[ -d "$DATA" ] || DATA=/work/shared/data/fashion
OUT=bench/results/ptq_qop
mkdir -p "$OUT"
for m in lenet300100 lenet5 lenet5_bn mobilenetv2_tiny mobilenetv2_tiny_relu; do
  "$BIN" compress "$DATA/$m.onnx" --recipe recipes/int8-calibrated.toml --qoperator \
    --calib fashion-mnist:512 --eval fashion-mnist -o "$OUT/$m.int8_qop.onnx" --json > "$OUT/$m.int8_qop.json"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); a=r['accuracy']; print(f\"{sys.argv[2]:<24} fp32 {a['fp32']:.2f}  shrink QDQ {a['compressed']:.2f}  shrink QOperator {a['qoperator']:.2f}\")" "$OUT/$m.int8_qop.json" "$m"
done
python3 bench/ptq_ort_check.py "$OUT"
