#!/bin/bash
# one H200: does GEMM speed depend on input data? torch with three input distributions, then ours.
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.sm --format=csv
python3 .devbin/gemm_data.py 2>&1 | tee $OUT/gemm_data.txt
.devbin/hetsim calibrate --quick --no-links --no-green --out $OUT/p.yaml --report $OUT/cal.md 2>&1 | grep -E "8192|check|HBM"
python3 .devbin/gemm_data.py 2>&1 | grep "round 0" | tee -a $OUT/gemm_data.txt
