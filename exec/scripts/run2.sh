#!/bin/bash
# two-GPU call: info, GPU tests, full calibrate (H200 compute + all link probes), transfer
# validation with the fresh profile, PyTorch baseline. Everything lands in $OUT/results.tar.gz
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
B=.devbin
R=$OUT/r; mkdir -p $R
{ date -u; nvidia-smi; nvidia-smi topo -m; nvidia-smi nvlink -s 2>&1 | head -40; } > $R/env.txt 2>&1
head -30 $R/env.txt | grep -E "H200|GPU0|GPU1|NV[0-9]"
$B/hetsim gpu-info 2>&1 | tee $R/info.txt
$B/gpu-tests --include-ignored --nocapture --test-threads=1 2>&1 | tail -8 | tee $R/gpu-tests.txt
C="$B/hetsim calibrate --out $R/profile.yaml --json $R/calibrate.json --report $R/calibrate.md"
echo "$C" > $R/calibrate.cmd
timeout 360 $C 2> $R/calibrate.log > /dev/null; echo "calibrate rc=$?"
V="$B/hetsim validate transfer --profile $R/profile.yaml --csv $R/validate.csv --report $R/validate.md"
echo "$V" > $R/validate.cmd
timeout 150 $V 2> $R/validate.log >/dev/null; echo "validate rc=$?"
timeout 120 python3 $B/torch_baseline.py --json $R/torch.json > $R/torch.txt 2>&1; echo "torch rc=$?"
cp $R/calibrate.md $R/validate.md $OUT/ 2>/dev/null
tar czf $OUT/results.tar.gz -C $OUT r
grep -E "GEMM|HBM|launch|green|GB/s" $R/calibrate.log | grep -v "^\[calibrate\]   " | head -40
grep -E "L= 32|L= 80|MISMATCH" $R/validate.log
grep -E "268435456|1073741824|GEMM|device copy" $R/torch.txt
