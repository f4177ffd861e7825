#!/usr/bin/env bash
# Mixed precision under 30% of the int8 model's stored size (issue #6), on
# LeNet-5-BN and MobileNetV2-tiny: int8 (plain and Huffman-coded .shrink),
# recipes/mixed-30pct.toml (budget 0.3 x the Huffman int8 tensor bytes), the
# same search against the plain int8 bytes, and all-W4 / all-W3 references.
# Every run evaluates fp32 on the 10k test images itself. Results:
# bench/results/ptq_mixed/*.json and the .shrink files' sizes (sizes.txt).
#
# usage: bench/ptq_mixed.sh [SHRINK_BINARY]
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/shrink}
DATA=${SHRINK_SHARED:-shared}/data/fashion
[ -d "$DATA" ] || DATA=/work/shared/data/fashion
OUT=bench/results/ptq_mixed
TMP=$(mktemp -d)
mkdir -p "$OUT"
for b in 4 3; do
  printf '[[pass]]\nname = "calibrate"\n[[pass]]\nname = "quantize"\nweights = "int%s"\nmse_clip_bits = 4\n[[pass]]\nname = "entropy-code"\n' "$b" > "$TMP/w$b.toml"
done
sed 's/^size_budget = 0.3 .*/bytes = 19654/' recipes/mixed-30pct.toml > "$TMP/mixed-vs-plain-int8.toml"
run() { # model recipe tag
  "$BIN" compress "$DATA/$1.onnx" --recipe "$2" --calib fashion-mnist:512 --eval fashion-mnist \
    -o "$OUT/$1.$3.shrink" --json > "$OUT/$1.$3.json" 2> "$OUT/$1.$3.err" \
    && echo "$1 $3 $(stat -c %s "$OUT/$1.$3.shrink")" >> "$OUT/sizes.txt" \
    || echo "$1 $3 FAILED: $(tail -1 "$OUT/$1.$3.err")" >> "$OUT/sizes.txt"
}
: > "$OUT/sizes.txt"
for m in lenet5_bn mobilenetv2_tiny; do
  run $m recipes/int8-calibrated.toml int8
  run $m recipes/int8-calibrated-huffman.toml int8h
  run $m recipes/mixed-30pct.toml mixed30
  run $m "$TMP/w4.toml" w4
  run $m "$TMP/w3.toml" w3
done
run lenet5_bn "$TMP/mixed-vs-plain-int8.toml" mixed30plain
rm -f "$OUT"/*.shrink
cat "$OUT/sizes.txt"
