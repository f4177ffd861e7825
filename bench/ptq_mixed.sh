#!/usr/bin/env bash
# Mixed precision within 30% of the int8 model's file (issue #6), on
# LeNet-5-BN and MobileNetV2-tiny. References: int8 as
# recipes/int8-calibrated.toml writes it (plain) and as
# recipes/int8-calibrated-huffman.toml writes it (each tensor plain or
# Huffman, whichever is smaller: the budget's reference). Candidates:
# recipes/mixed-30pct.toml (compact container v2 + width search + QAT), the
# same without its QAT pass (PTQ only), and all-W4 / all-W3 PTQ references.
# Every run evaluates fp32 on the 10k test images itself. Results:
# bench/results/ptq_mixed/*.json, sizes.txt (file bytes) and summary.txt.
#
# usage: bench/ptq_mixed.sh [SHRINK_BINARY] [THREADS]   (MODELS="lenet5_bn" for a subset;
#        results of models not run are kept)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/shrink}
THREADS=${2:-2}
DATA=${SHRINK_SHARED:-shared}/data/fashion
[ -d "$DATA" ] || DATA=/work/shared/data/fashion
OUT=bench/results/ptq_mixed
TMP=$(mktemp -d)
mkdir -p "$OUT"
for b in 4 3; do
  printf '[[pass]]\nname = "calibrate"\n[[pass]]\nname = "quantize"\nweights = "int%s"\nmse_clip_bits = 4\n[[pass]]\nname = "entropy-code"\n' "$b" > "$TMP/w$b.toml"
done
python3 -c 'import sys; t=open(sys.argv[1]).read(); print(t[:t.index("[[pass]]\nname = \"qat\"")])' recipes/mixed-30pct.toml > "$TMP/mixed30-ptq.toml"
run() { # model recipe tag
  local t0=$(date +%s)
  "$BIN" compress "$DATA/$1.onnx" --recipe "$2" --calib fashion-mnist:512 --eval fashion-mnist \
    --threads "$THREADS" -o "$OUT/$1.$3.shrink" --json > "$OUT/$1.$3.json" 2> "$OUT/$1.$3.err" \
    && echo "$1 $3 $(stat -c %s "$OUT/$1.$3.shrink") $(( $(date +%s) - t0 ))s" >> "$OUT/sizes.txt" \
    || echo "$1 $3 FAILED: $(tail -1 "$OUT/$1.$3.err")" >> "$OUT/sizes.txt"
}
MODELS=${MODELS:-lenet5_bn mobilenetv2_tiny}
touch "$OUT/sizes.txt"
for m in $MODELS; do sed -i "/^$m /d" "$OUT/sizes.txt"; done
echo "# $(date -u +%FT%TZ) $MODELS: $(uptime)" >> "$OUT/sizes.txt"
for m in $MODELS; do
  run $m recipes/int8-calibrated.toml int8
  run $m recipes/int8-calibrated-huffman.toml int8h
  run $m recipes/mixed-30pct.toml mixed30
  run $m "$TMP/mixed30-ptq.toml" mixed30ptq
  run $m "$TMP/w4.toml" w4
  run $m "$TMP/w3.toml" w3
done
rm -f "$OUT"/*.shrink
python3 - "$OUT" > "$OUT/summary.txt" <<'PY'
import json, sys, os
out = sys.argv[1]
sizes = {}
for line in open(os.path.join(out, "sizes.txt")):
    p = line.split()
    if len(p) >= 3 and p[0] != "#" and p[2].isdigit():
        sizes[(p[0], p[1])] = int(p[2])
print(f"{'model':<18}{'variant':<12}{'file B':>9}{'% int8':>8}{'% int8h':>8}{'fp32':>8}{'acc':>8}{'loss pt':>9}")
for m in ["lenet5_bn", "mobilenetv2_tiny"]:
    for v in ["int8", "int8h", "mixed30", "mixed30ptq", "w4", "w3"]:
        try:
            d = json.load(open(os.path.join(out, f"{m}.{v}.json")))
        except Exception:
            print(f"{m:<18}{v:<12} failed"); continue
        b = sizes.get((m, v)); r8 = sizes.get((m, "int8")); r8h = sizes.get((m, "int8h"))
        a = d["accuracy"]
        pct = lambda r: f"{100*b/r:7.1f}%" if b and r else "      -"
        print(f"{m:<18}{v:<12}{b or 0:>9}{pct(r8):>8}{pct(r8h):>8}{a['fp32']:>8.2f}{a['compressed']:>8.2f}{a['fp32']-a['compressed']:>9.2f}")
PY
cat "$OUT/sizes.txt" "$OUT/summary.txt"
