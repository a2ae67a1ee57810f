.devbin/hetsim exec bench --iters 50 --out $OUT/r/bench.md  (run twice: bench.md, bench-2.md)
