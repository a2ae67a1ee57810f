.devbin/hetsim-engine bench --iters 50 --out $OUT/r/bench.md
