#!/usr/bin/env bash
# The engine on one GPU: every kernel and the whole forward pass of both families against the CPU
# references (`hetsim exec selftest`), then each model's speed against the floors measured in the
# same run (`hetsim exec bench`, twice: the GEMM peak a floor is measured with moves by ±5 %
# between runs), then for LLaVA models the GPU time of every operation of one pass
# (`hetsim exec bench --breakdown`; Qwen2.5-VL's bench prints its breakdown itself). The benches
# do not run when the selftest fails. A few minutes at most on an H100 or H200.
#
#   exec/scripts/gpu-selftest-and-bench.sh [--gpu N] [--model MODEL]... [--out DIR]
#
# MODEL: llava-1.5-7b (the default) or another built-in (`hetsim exec bench --model`); give
# --model several times to bench several. DIR (default out/engine-<UTC date>) receives env.txt,
# commands.txt, selftest.txt and, per model, bench-MODEL.md, bench-MODEL-2.md and (LLaVA)
# breakdown-MODEL.md. HETSIM names the binary (default target/release/hetsim).
set -euo pipefail

hetsim=${HETSIM:-target/release/hetsim}
gpu=0
out=out/engine-$(date -u +%F)
models=()
while [ $# -gt 0 ]; do
  case $1 in
    --gpu) gpu=$2; shift 2 ;;
    --model) models+=("$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--gpu N] [--model MODEL]... [--out DIR]" >&2; exit 2 ;;
  esac
done
[ ${#models[@]} -gt 0 ] || models=(llava-1.5-7b)
mkdir -p "$out"

# shellcheck source=record.sh
source "$(dirname "$0")/record.sh"

# The machine as the driver sees it; a note for the reader, so its failure stops nothing.
{ date -u +%FT%TZ; nvidia-smi; } > "$out/env.txt" 2>&1 || true
record selftest "$hetsim" exec selftest --gpu "$gpu"
for m in "${models[@]}"; do
  record "bench-$m" "$hetsim" exec bench --gpu "$gpu" --model "$m" --iters 50 --out "$out/bench-$m.md"
  record "bench-$m-2" "$hetsim" exec bench --gpu "$gpu" --model "$m" --iters 50 --out "$out/bench-$m-2.md"
  case $m in
    llava*) record "breakdown-$m" "$hetsim" exec bench --gpu "$gpu" --model "$m" --breakdown \
              --out "$out/breakdown-$m.md" ;;
  esac
done
echo "wrote $out"
