#!/bin/bash
# Engine checks and timings on one GPU (issue 6): selftest, bench, phase profiler.
# Run from the repository root on the GPU machine with the binaries in .devbin/.
OUT=${OUT:-/tmp/engine-out}
R=$OUT/r
mkdir -p $R
B=.devbin
date -u +%FT%TZ > $R/date.txt
nvidia-smi > $R/env.txt 2>&1
echo "== selftest"; echo "$B/hetsim exec selftest" > $R/selftest.cmd
HETSIM_ENGINE_TRACE=1 timeout 150 $B/hetsim exec selftest > $R/selftest.txt 2>&1; echo "exit $?" >> $R/selftest.txt
cat $R/selftest.txt
echo "== bench"; echo "$B/hetsim exec bench --iters 50 --out \$OUT/r/bench.md" > $R/bench.cmd
timeout 200 $B/hetsim exec bench --iters 50 --out $R/bench.md > $R/bench.txt 2>&1; echo "exit $?" >> $R/bench.txt
if [ "${PROFILE:-1}" = 1 ]; then
  echo "== calibrate --model"
  echo "$B/hetsim calibrate --no-links --no-green --model llava-1.5-7b --out \$OUT/r/profile.yaml --report \$OUT/r/cal.md" > $R/calibrate.cmd
  timeout 240 $B/hetsim calibrate --no-links --no-green --model llava-1.5-7b --out $R/profile.yaml --report $R/cal.md > $R/calibrate.txt 2>&1
  echo "exit $?" >> $R/calibrate.txt
  grep -A60 "Phase profile" $R/calibrate.txt | head -70; tail -3 $R/calibrate.txt
fi
tar czf $OUT/results.tar.gz -C $OUT r
cat $R/bench.txt
