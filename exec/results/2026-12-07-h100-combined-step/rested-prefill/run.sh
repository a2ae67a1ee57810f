#!/bin/bash
# One lease: combined-step calibrate, colocated validate, green replay (H100) or bench (H200).
set -u
R=$OUT/r; mkdir -p $R /tmp/hb
gunzip -c .devbin/hetsim.gz > /tmp/hb/hetsim && chmod +x /tmp/hb/hetsim
H=/tmp/hb/hetsim
log() { echo "$(date -u +%FT%TZ) $*" >> $R/commands.txt; }
fin() { log done; tar czf $OUT/r.tgz -C $OUT r; }
trap fin EXIT
cat .devbin/commit > $R/binary.txt
nvidia-smi --query-gpu=name,serial,clocks.max.sm,driver_version --format=csv > $R/env.txt
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
run() { local t=$1; shift; log "timeout $t $*"; timeout $t "$@"; echo "rc=$?" >> $R/commands.txt; }
run 40 $H exec selftest --gpu 0 > $R/selftest.txt 2>&1
run 200 $H calibrate --no-links --no-green --model llava-1.5-7b --gpu 0 --out $R/profile.yaml --report $R/calibrate.md > $R/calibrate.txt 2>&1
case "$GPU" in
  *H100*)
    run 170 $H validate .devbin/validate-h100-loads.yaml --profile $R/profile.yaml --out $R/validate-colocated --trace > $R/validate-colocated.txt 2>&1
    run 170 $H validate .devbin/validate-green-h100.yaml --profile profiles/h100-2026-12-07-llava-1.5-7b-split40.yaml --out $R/validate-green --trace > $R/validate-green.txt 2>&1 ;;
  *)
    run 170 $H validate experiments/validate-h200.yaml --profile $R/profile.yaml --out $R/validate-h200 --trace > $R/validate-h200.txt 2>&1
    HETSIM=$H run 170 bash exec/scripts/gpu-selftest-and-bench.sh --model qwen2.5-vl-7b --out $R/bench > $R/bench.txt 2>&1 ;;
esac
