.devbin/hetsim-engine calibrate --no-links --no-green --model llava-1.5-7b --out $OUT/r/profile.yaml --report $OUT/r/cal.md
