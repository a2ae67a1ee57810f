.devbin/hetsim exec bench --breakdown --out $OUT/r/breakdown.md
