#!/bin/bash
# hetsim validate of every shape the replay serves — {colocated, modality, stage} × {NVLink,
# PCIe} × {2, 8 req/s} — against the 2×H200 profile (links + engine phase table,
# exec/results/h200x2-engine/profile.yaml). The selftest (kernels, forward pass, engine, stage
# hand-off) runs first on GPU 0. With CALIBRATE=1 the engine's phase table is measured again on
# GPU 0 (hetsim calibrate --model) and joined with the link profile, and both files are run
# against that profile instead. With 4 GPUs the NVLink file replays on GPUs 0–1 and the PCIe
# file on GPUs 2–3 at the same time; with 2 GPUs one after the other (FILES picks which).
# Everything lands in $OUT/results.tar.gz.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
B=.devbin
R=$OUT/r; mkdir -p $R
{ date -u; nvidia-smi; nvidia-smi topo -m; } > $R/env.txt 2>&1
echo "$B/hetsim exec selftest" > $R/selftest.cmd
timeout 120 $B/hetsim exec selftest > $R/selftest.txt 2>&1; echo "exit $?" >> $R/selftest.txt
tail -20 $R/selftest.txt
if [ -n "$CALIBRATE" ]; then
  C1="$B/hetsim calibrate --no-links --no-green --model llava-1.5-7b --out $R/phases.yaml --report $R/cal.md"
  echo "$C1" > $R/calibrate.cmd
  timeout 240 $C1 > $R/cal.txt 2>&1; echo "exit $?" >> $R/cal.txt
  P=$R/profile.yaml
  sed -n '1,/^links:/{/^links:/!p}' $R/phases.yaml > $P
  sed -n '/^links:/,/^phases:/{/^phases:/!p}' exec/results/h200x2-merged/profile.yaml >> $P
  sed -n '/^phases:/,$p' $R/phases.yaml >> $P
  for f in nvlink pcie; do
    sed "s#^profile: .*#profile: $P#" experiments/validate-$f.yaml > experiments/validate-$f.yaml.tmp
    mv experiments/validate-$f.yaml.tmp experiments/validate-$f.yaml
  done
  tail -3 $R/cal.txt
fi
n=$(nvidia-smi -L | wc -l)
gpu=0
for x in ${FILES:-nvlink:nv pcie:pc}; do
  f=${x%%:*}; d=${x##*:}
  C="$B/hetsim validate experiments/validate-$f.yaml --out $R/$d --gpu $gpu"
  echo "$(date -u +%T) $C" >> $R/validate.cmd
  if [ "$n" -ge 4 ]; then
    (timeout ${T:-420} $C > $R/$d.txt 2> $R/$d.log; echo "exit $?" >> $R/$d.txt) &
    gpu=$((gpu + 2))
  else
    timeout ${T:-420} $C > $R/$d.txt 2> $R/$d.log; echo "exit $?" >> $R/$d.txt
  fi
done
wait
date -u +%T >> $R/validate.cmd
tar czf $OUT/results.tar.gz -C $OUT r
for x in ${FILES:-nvlink:nv pcie:pc}; do d=${x##*:}; tail -62 $R/$d.txt; tail -4 $R/$d.log; done
