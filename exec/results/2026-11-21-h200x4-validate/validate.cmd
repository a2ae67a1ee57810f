08:06:48 .devbin/hetsim validate experiments/validate-nvlink.yaml --out /root/out/r/nv --gpu 0
08:06:48 .devbin/hetsim validate experiments/validate-pcie.yaml --out /root/out/r/pc --gpu 2
08:11:12
