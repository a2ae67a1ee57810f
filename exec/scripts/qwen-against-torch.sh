#!/usr/bin/env bash
# Qwen2.5-VL-7B side by side with transformers on one GPU (issue 20: "not slower at any shape"):
# transformers' own forward, eager then sdpa, at the bench's shapes
# (torch-qwen2.5-vl-forward.py → torch.json), then our bench with that file beside it
# (`hetsim exec bench --model qwen2.5-vl-7b --against`). One after the other, so the torch
# models and ours never hold GPU memory at the same time. About 4 minutes on an H200.
#
#   exec/scripts/qwen-against-torch.sh [--gpu N] [--out DIR]
#
# DIR (default out/qwen-against-torch-<UTC date>) receives env.txt, commands.txt, torch.txt
# (the script's progress), torch.json, bench-qwen.md (our table, then "against transformers")
# and bench-qwen.txt. HETSIM names the binary (default target/release/hetsim), PYTHON the
# interpreter with torch and transformers (default python3).
set -euo pipefail

hetsim=${HETSIM:-target/release/hetsim}
python=${PYTHON:-python3}
gpu=0
out=out/qwen-against-torch-$(date -u +%F)
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
# 20 decode steps and 5 prefill / encode passes per point: the eager encode of 16 images
# (per-window attention calls from Python) takes seconds a pass.
record torch "$python" "$(dirname "$0")/torch-qwen2.5-vl-forward.py" --gpu "$gpu" --out "$out" \
  --iters 20 --pass-iters 5
record bench-qwen "$hetsim" exec bench --model qwen2.5-vl-7b --gpu "$gpu" --iters 50 \
  --against "$out/torch.json" --out "$out/bench-qwen.md"
echo "wrote $out"
