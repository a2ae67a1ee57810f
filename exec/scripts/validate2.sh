#!/bin/bash
# Two-GPU call: hetsim validate on the 2×H200 experiments (real replay of the colocated and
# modality-level scenarios, NVLink peer copy and host-staged PCIe; simulation with the machine's
# calibrated profile; comparison). Everything lands in $OUT/results.tar.gz.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
B=.devbin
R=$OUT/r; mkdir -p $R
{ date -u; nvidia-smi; nvidia-smi topo -m; } > $R/env.txt 2>&1
for x in nvlink:nv pcie:pc; do
  f=${x%%:*}; d=${x##*:}
  C="$B/hetsim validate experiments/validate-$f.yaml --out $R/$d"
  echo "$C" >> $R/validate.cmd
  timeout ${T:-235} $C > $R/$d.txt 2> $R/$d.log; echo "exit $?" >> $R/$d.txt
done
tar czf $OUT/results.tar.gz -C $OUT r
for d in nv pc; do tail -40 $R/$d.txt; tail -4 $R/$d.log; done
