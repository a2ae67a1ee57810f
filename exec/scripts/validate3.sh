#!/bin/bash
# Two-GPU call: measure the engine's phase table on this H200 (hetsim calibrate --model), combine
# it with the machine's link calibration (exec/results/h200x2-merged/profile.yaml), then
# hetsim validate the NVLink experiment against it. Everything lands in $OUT/results.tar.gz.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
B=.devbin
R=$OUT/r; mkdir -p $R
{ date -u; nvidia-smi; } > $R/env.txt 2>&1
C1="$B/hetsim calibrate --no-links --no-green --model llava-1.5-7b --out $R/phases.yaml --report $R/cal.md"
echo "$C1" > $R/calibrate.cmd
timeout 200 $C1 > $R/cal.txt 2>&1; echo "exit $?" >> $R/cal.txt
P=$R/profile.yaml
sed -n '1,/^links:/{/^links:/!p}' $R/phases.yaml > $P
sed -n '/^links:/,/^phases:/{/^phases:/!p}' exec/results/h200x2-merged/profile.yaml >> $P
sed -n '/^phases:/,$p' $R/phases.yaml >> $P
sed "s#^profile: .*#profile: $P#" experiments/validate-nvlink.yaml > $R/validate-nvlink.yaml
C2="$B/hetsim validate $R/validate-nvlink.yaml --out $R/nv"
echo "$C2" > $R/validate.cmd
timeout 260 $C2 > $R/nv.txt 2> $R/nv.log; echo "exit $?" >> $R/nv.txt
tar czf $OUT/results.tar.gz -C $OUT r
tail -5 $R/cal.txt; tail -48 $R/nv.txt; tail -3 $R/nv.log
