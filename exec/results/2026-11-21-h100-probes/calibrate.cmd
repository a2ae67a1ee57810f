.devbin/hetsim-exec calibrate --out /root/out/r/profile.yaml --json /root/out/r/calibrate.json --report /root/out/r/calibrate.md
