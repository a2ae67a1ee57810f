.devbin/hetsim exec bench --breakdown --only decode --out $OUT/r/breakdown.md
