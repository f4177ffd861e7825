#!/usr/bin/env bash
# Data-free quantisation (DFQ) of the five shared Fashion-MNIST models on the
# 10k test images, fp32 measured in the same run. No calibration data is used
# by any DFQ row. Writes bench/results/ptq_dfq.md.
# Usage: bench/ptq_dfq.sh [IMAGES] [MODEL...]   (default: 10000, all five)
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/results/ptq_dfq.md
cargo build --release -q -p shrink-compress --example ptq_dfq_fashion
bin="${CARGO_TARGET_DIR:-target}/release/examples/ptq_dfq_fashion"
{
  echo "# DFQ on Fashion-MNIST ($(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD))"
  echo
  "$bin" "${1:-10000}" "${@:2}"
} | tee "$out"
