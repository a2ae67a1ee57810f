#!/usr/bin/env bash
# The LLaVA engine on one GPU: every kernel and the whole forward pass against the CPU reference
# (`hetsim exec selftest`), then its speed against the floors measured in the same run
# (`hetsim exec bench`, twice: the GEMM peak a floor is measured with moves by ±5 % between runs),
# then the GPU time of every operation of one pass (`hetsim exec bench --breakdown`). The bench
# does not run when the selftest fails. A few minutes at most on an H100.
#
#   exec/scripts/gpu-selftest-and-bench.sh [--gpu N] [--out DIR]
#
# DIR (default out/engine-<UTC date>) receives env.txt, commands.txt, selftest.txt, bench.md,
# bench-2.md and breakdown.md. HETSIM names the binary (default target/release/hetsim).
set -euo pipefail

hetsim=${HETSIM:-target/release/hetsim}
gpu=0
out=out/engine-$(date -u +%F)
while [ $# -gt 0 ]; do
  case $1 in
    --gpu) gpu=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--gpu N] [--out DIR]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"

# shellcheck source=record.sh
source "$(dirname "$0")/record.sh"

# The machine as the driver sees it; a note for the reader, so its failure stops nothing.
{ date -u +%FT%TZ; nvidia-smi; } > "$out/env.txt" 2>&1 || true
record selftest "$hetsim" exec selftest --gpu "$gpu"
record bench "$hetsim" exec bench --gpu "$gpu" --iters 50 --out "$out/bench.md"
record bench-2 "$hetsim" exec bench --gpu "$gpu" --iters 50 --out "$out/bench-2.md"
record breakdown "$hetsim" exec bench --gpu "$gpu" --breakdown --out "$out/breakdown.md"
echo "wrote $out"
