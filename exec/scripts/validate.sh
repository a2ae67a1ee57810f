#!/usr/bin/env bash
# The simulator against the real engine: the selftest first (a wrong kernel would make every
# comparison meaningless), optionally a fresh phase table of the engine on this machine, then
# `hetsim validate` of each experiment: its trace served for real and simulated, both compared.
#
#   exec/scripts/validate.sh [--calibrate [--links-from PROFILE]] [--profile PROFILE]
#                            [--model MODEL] [--parallel] [--out DIR] EXPERIMENT[@GPU]...
#
#   EXPERIMENT@GPU   replay on GPU (and GPU + 1 for a two-GPU deployment); default GPU 0.
#   --calibrate      measure the engine's phase table first (`hetsim calibrate --no-links
#                    --model MODEL` on the first experiment's GPU, ~4 minutes) and
#                    simulate every experiment with it instead of the file's `profile:`.
#   --model MODEL    the model --calibrate profiles (default: the first experiment's
#                    `defaults: model:`, e.g. qwen2.5-vl-7b in experiments/validate-qwen.yaml).
#   --links-from P   with --calibrate: copy the links of profile P (this machine's earlier
#                    `hetsim calibrate`) into the new profile, for experiments that ship over them.
#   --profile P      simulate with profile P instead of the file's `profile:`.
#   --parallel       replay all experiments at once (give each its own GPUs).
#
# Example, 4 GPUs, as recorded in exec/results/2026-11-21-h200x4-validate/:
#   exec/scripts/validate.sh --calibrate --links-from \
#     profiles/h200x2-2026-11-21.yaml --parallel \
#     experiments/validate-nvlink.yaml@0 experiments/validate-pcie.yaml@2
#
# DIR (default out/validate-<UTC date>) receives env.txt, commands.txt, selftest.txt, the new
# profile.yaml and calibrate.md (with --calibrate), and for each experiment NAME.txt (the printed
# comparison), NAME.log (the replay's progress) and NAME/ (both sources' rows, comparison.csv).
# Nothing tracked is edited. HETSIM names the binary (default target/release/hetsim).
set -euo pipefail

usage() {
  sed -n '6,7p' "$0" | sed 's/^#  //' >&2
  exit 2
}

hetsim=${HETSIM:-target/release/hetsim}
model=""
out=out/validate-$(date -u +%F)
calibrate=0 links_from="" profile="" parallel=0 runs=()
while [ $# -gt 0 ]; do
  case $1 in
    --calibrate) calibrate=1; shift ;;
    --links-from) links_from=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --parallel) parallel=1; shift ;;
    --out) out=$2; shift 2 ;;
    -*) usage ;;
    *) runs+=("$1"); shift ;;
  esac
done
[ ${#runs[@]} -gt 0 ] || usage
if [ -n "$links_from" ] && [ $calibrate = 0 ]; then
  echo "--links-from needs --calibrate" >&2; exit 2
fi
if [ -n "$profile" ] && [ $calibrate = 1 ]; then
  echo "give --calibrate or --profile, not both" >&2; exit 2
fi
for r in "${runs[@]}"; do
  [ -f "${r%@*}" ] || { echo "no experiment file ${r%@*}" >&2; exit 2; }
done
if [ -z "$model" ]; then
  # The first experiment's `defaults: model:` (the line indented by two spaces).
  model=$(sed -n 's/^  model: *\([^ #]*\).*/\1/p' "${runs[0]%@*}" | head -n 1)
  [ -n "$model" ] || { echo "${runs[0]%@*}: no 'defaults: model:'; give --model" >&2; exit 2; }
fi
mkdir -p "$out"
first_gpu=0
[[ ${runs[0]} == *@* ]] && first_gpu=${runs[0]##*@}

# shellcheck source=record.sh
source "$(dirname "$0")/record.sh"

# The machine as the driver sees it; a note for the reader, so its failure stops nothing.
{ date -u +%FT%TZ; nvidia-smi; nvidia-smi topo -m; } > "$out/env.txt" 2>&1 || true
record selftest "$hetsim" exec selftest --gpu "$first_gpu"
if [ $calibrate = 1 ]; then
  profile=$out/profile.yaml
  record calibrate "$hetsim" calibrate --no-links --no-green --model "$model" --gpu "$first_gpu" \
    ${links_from:+--links-from "$links_from"} --out "$profile" --report "$out/calibrate.md"
fi

# One experiment: the comparison table to NAME.txt, the replay's progress to NAME.log.
validate() {
  local file=${1%@*} gpu=0 name
  [[ $1 == *@* ]] && gpu=${1##*@}
  name=$(basename "$file" .yaml)
  local cmd=("$hetsim" validate "$file" --gpu "$gpu" --out "$out/$name"
    ${profile:+--profile "$profile"})
  echo "$(date -u +%FT%TZ) ${cmd[*]}" >> "$out/commands.txt"
  "${cmd[@]}" > "$out/$name.txt" 2> "$out/$name.log"
}

failed=0
if [ $parallel = 1 ]; then
  pids=()
  for r in "${runs[@]}"; do validate "$r" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
else
  for r in "${runs[@]}"; do validate "$r" || failed=1; done
fi
echo "$(date -u +%FT%TZ) done" >> "$out/commands.txt"
for r in "${runs[@]}"; do
  name=$(basename "${r%@*}" .yaml)
  echo "== $name"; cat "$out/$name.txt"; tail -3 "$out/$name.log"
done
exit $failed
