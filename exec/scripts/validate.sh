#!/bin/bash
# One-GPU call: hetsim validate on the H100 experiment (real replay of the colocated scenarios,
# simulation with the measured phase profile, comparison). Everything lands in $OUT/results.tar.gz.
B=.devbin
R=$OUT/r; mkdir -p $R
{ date -u; nvidia-smi; } > $R/env.txt 2>&1
C="$B/hetsim validate experiments/validate-h100.yaml --out $R/val"
echo "$C" > $R/validate.cmd
timeout 540 $C > $R/validate.txt 2> $R/validate.log; echo "exit $?" >> $R/validate.txt
tar czf $OUT/results.tar.gz -C $OUT r
tail -45 $R/validate.txt; tail -5 $R/validate.log
