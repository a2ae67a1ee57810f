.devbin/hetsim validate experiments/validate-h100.yaml --out /root/out/r/val
