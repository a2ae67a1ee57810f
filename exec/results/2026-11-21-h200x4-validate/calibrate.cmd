.devbin/hetsim calibrate --no-links --no-green --model llava-1.5-7b --out /root/out/r/phases.yaml --report /root/out/r/cal.md
