#!/bin/bash
# single-GPU call: info, GPU tests, full calibrate, transfer validation (host round trip), torch baseline
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
B=.devbin
cd "$(dirname "$0")/.."
{
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
ldconfig -p | grep -E 'libcuda.so|nvrtc|cublasLt|nvidia-ml' | head
ls -d /usr/local/cuda* 2>/dev/null; ls /usr/local/cuda/lib64 2>/dev/null | grep -E 'nvrtc|cublasLt' | head
} > $OUT/env.txt 2>&1
cat $OUT/env.txt
$B/hetsim gpu-info 2>&1 | tee $OUT/info.txt
$B/gpu-tests --include-ignored --nocapture --test-threads=1 2>&1 | tail -15 | tee $OUT/gpu-tests.txt
timeout 300 $B/hetsim calibrate --out $OUT/profile.yaml --json $OUT/calibrate.json --report $OUT/calibrate.md 2> $OUT/calibrate.log > /dev/null; echo "calibrate rc=$?"
tail -5 $OUT/calibrate.log
timeout 120 $B/hetsim validate transfer --layers 8,32,80 --repeats 3 --csv $OUT/validate.csv --report $OUT/validate.md 2> $OUT/validate.log >/dev/null; echo "validate rc=$?"
tail -12 $OUT/validate.log
timeout 120 python3 $B/torch_baseline.py --json $OUT/torch.json > $OUT/torch.txt 2>&1; echo "torch rc=$?"
tail -4 $OUT/torch.txt
grep -E "8192|HBM|launch|green|d2h|h2d|staged|pageable" $OUT/calibrate.log | head -30
