.devbin/hetsim exec bench --iters 50 --out $OUT/r/bench.md
