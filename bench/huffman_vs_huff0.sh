#!/usr/bin/env bash
# Huffman decode throughput, single thread, thread CPU time: shrink's decoder
# (current and previous) and zstd's Huff0 (libzstd's decompression of the same
# streams compressed at level 1: literal-only blocks, so it is Huff0's
# 4-stream decoder plus block overhead; bench/peers/huff0_decode.c), on the
# same three 1 MiB streams, interleaved ROUNDS times, with the load average.
# Needs a C compiler and libzstd.so.1. Usage: bench/huffman_vs_huff0.sh [ROUNDS]
set -euo pipefail
rounds=${1:-3}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cc -O2 "$here/peers/huff0_decode.c" -o "$dir/huff0_decode" -l:libzstd.so.1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
bin=$(cargo bench -p shrink-kernels --bench huffman --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
for r in $(seq "$rounds"); do
    echo "== round $r"
    SHRINK_HUFF_DUMP=$dir "$bin" --bench no-criterion-group 2>&1 | sed -n '/same-run/,/short frame/p'
    echo "  zstd $(strings "$(ldconfig -p | sed -n 's/.*libzstd.so.1 .*=> //p' | head -1)" | grep -m1 -o '^1\.[0-9]*\.[0-9]*$' || true) (file, bytes, compressed, Gsym/s), load average $(cut -d' ' -f1-3 /proc/loadavg):"
    for f in "$dir"/*.u8; do
        echo "    $("$dir/huff0_decode" "$f")"
    done
done
