#!/usr/bin/env bash
# A machine's links and compute: `hetsim gpu-info`, every probe of `hetsim calibrate` (links,
# GEMM, HBM, launch overhead, SM partitions) into a hardware profile, real KV caches and
# embeddings shipped with `hetsim validate transfer` against that profile's link model, and the
# same probes in PyTorch for comparison where python3 can import torch. Link probes need two GPUs
# for peer copies; on one GPU they go GPU -> host -> the same GPU. About a minute on an H200 pair.
#
#   exec/scripts/probe-links-and-compute.sh [--out DIR]
#
# DIR (default out/probes-<UTC date>) receives env.txt, commands.txt, info.txt, profile.yaml,
# calibrate.json, calibrate.md, validate.csv, validate.md and torch.json. Keep the profile as
# profiles/<machine>-<date>.yaml. HETSIM names the binary (default target/release/hetsim).
set -euo pipefail

hetsim=${HETSIM:-target/release/hetsim}
scripts=$(dirname "$0")
out=out/probes-$(date -u +%F)
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--out DIR]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"

# shellcheck source=record.sh
source "$(dirname "$0")/record.sh"

# The machine as the driver sees it; a note for the reader, so its failure stops nothing.
{ date -u +%FT%TZ; nvidia-smi; nvidia-smi topo -m; } > "$out/env.txt" 2>&1 || true
record info "$hetsim" gpu-info
record calibrate "$hetsim" calibrate --out "$out/profile.yaml" --json "$out/calibrate.json" \
  --report "$out/calibrate.md"
record validate "$hetsim" validate transfer --profile "$out/profile.yaml" \
  --csv "$out/validate.csv" --report "$out/validate.md"
if python3 -c 'import torch' 2>/dev/null; then
  record torch python3 "$scripts/torch-probe-baseline.py" --json "$out/torch.json"
else
  echo "python3 cannot import torch: no PyTorch baseline" | tee "$out/torch.txt"
fi
echo "wrote $out"
