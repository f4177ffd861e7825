#!/usr/bin/env bash
# Deep Compression of the shared Fashion-MNIST LeNets (issue #7 acceptance):
# prune (global magnitude, AGP steps with masked fine-tuning) → k-means
# weight sharing → centroid fine-tuning → Huffman/CSR in a .shrink file.
# Prints the paper-style table; accuracy on the 10k test images, fp32 in the
# same run. Usage: bench/prune_deep_compression.sh [outdir]
set -euo pipefail
cd "$(dirname "$0")/.."
SHRINK=${SHRINK:-${CARGO_TARGET_DIR:-target}/release/shrink}
DATA=${SHRINK_SHARED:-../../shared}/data/fashion
[ -d "$DATA" ] || DATA=/work/shared/data/fashion
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
echo "== LeNet-300-100"
"$SHRINK" prune "$DATA/lenet300100.onnx" --deep-compression fashion-mnist \
  --sparsity 0.93 --scope global --prune-steps 4 --epochs 3 --lr 1e-3 \
  --bits 5 --centroid-epochs 1 -o "$OUT/lenet300100.shrink"
echo "== LeNet-5 (recipes/deep-compression-lenet5.toml, the same settings)"
"$SHRINK" prune "$DATA/lenet5.onnx" --deep-compression fashion-mnist \
  --sparsity 0.94 --scope global --target conv1.weight=0.4 --prune-steps 4 \
  --epochs 3 --final-epochs 6 --lr 1e-3 --bits 4 --conv-bits 5 --bias-bits 5 \
  --centroid-epochs 2 --threads "${THREADS:-2}" \
  -o "$OUT/lenet5.shrink"
