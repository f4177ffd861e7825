#!/usr/bin/env bash
# Kernel benchmarks against peers, interleaved so both see the same machine load.
#   bench/run_kernels.sh [ROUNDS] [MIN_SECONDS]
# Writes raw JSON lines to bench/results/raw/ and the tables to bench/results/kernels.md.
# Needs: python3 with numpy, torch (CPU ok), onnx, onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
MIN_S=${2:-0.3}
cargo build -p shrink-kernels --release --example kernel_table
BIN=${CARGO_TARGET_DIR:-target}/release/examples/kernel_table
RAW=bench/results/raw
mkdir -p "$RAW"
rm -f "$RAW"/*.jsonl
for r in $(seq 1 "$ROUNDS"); do
  for t in 1 2; do
    "$BIN" "$t" "$MIN_S" > "$RAW/ours_t${t}_r${r}.jsonl"
    python3 bench/peers/gemm_peers.py "$t" "$MIN_S" > "$RAW/peers_t${t}_r${r}.jsonl"
  done
done
python3 bench/peers/compare.py "$RAW" bench/results/kernels.md > /dev/null
echo "wrote bench/results/kernels.md"
