#!/usr/bin/env bash
# Structured pruning to 50% of the MACs (physical removal, no fine-tuning):
# accuracy on the 10k Fashion-MNIST test images and shrink's latency before
# and after, measured interleaved (A B A B ...), medians of the per-round
# medians, with the load average. Latency depends only on the pruned shapes,
# so fine-tuning (see BENCHMARKS.md §7 for the command) is not needed here.
# Usage: bench/prune_structured.sh [rounds] [threads] [align] [align for MobileNetV2-tiny]
# (defaults 8 and 16: the alignments of the fine-tuned results in BENCHMARKS.md §7)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
THREADS=${2:-1}
ALIGN=${3:-8}
ALIGN_MNV2=${4:-16}
SHRINK=${SHRINK:-${CARGO_TARGET_DIR:-target}/release/shrink}
DATA=${SHRINK_SHARED:-../../shared}/data/fashion
[ -d "$DATA" ] || DATA=/work/shared/data/fashion
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for m in lenet5_bn mobilenetv2_tiny; do
  echo "== $m"
  a=$ALIGN; [ "$m" = mobilenetv2_tiny ] && a=$ALIGN_MNV2
  "$SHRINK" prune "$DATA/$m.onnx" --macs 0.5 --align "$a" -o "$OUT/$m.pruned.onnx" --eval fashion-mnist | grep -E "params|top-1"
  for batch in 1 256; do
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    for r in $(seq "$ROUNDS"); do
      "$SHRINK" bench "$DATA/$m.onnx" --batch $batch --threads "$THREADS" --min-time 1 --json | python3 -c 'import json,sys;d=json.load(sys.stdin);print("A",d["median_s"],d["p10_s"])'
      "$SHRINK" bench "$OUT/$m.pruned.onnx" --batch $batch --threads "$THREADS" --min-time 1 --json | python3 -c 'import json,sys;d=json.load(sys.stdin);print("B",d["median_s"],d["p10_s"])'
    done > "$OUT/times"
    python3 - "$OUT/times" "$m" "$batch" <<'PY'
import sys, statistics
a, b, pa, pb = [], [], [], []
for line in open(sys.argv[1]):
    k, v, p = line.split()
    (a if k == "A" else b).append(float(v)); (pa if k == "A" else pb).append(float(p))
ma, mb = statistics.median(a), statistics.median(b)
qa, qb = statistics.median(pa), statistics.median(pb)
print(f"{sys.argv[2]} batch {sys.argv[3]}: original {ma*1e3:.3f} ms, pruned {mb*1e3:.3f} ms, speed-up {ma/mb:.2f}x"
      f" (p10: {qa*1e3:.3f} / {qb*1e3:.3f} ms, {qa/qb:.2f}x)")
PY
  done
done
