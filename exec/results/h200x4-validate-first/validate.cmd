06:20:29 .devbin/hetsim validate experiments/validate-nvlink.yaml --out /root/out/r/nv --gpu 0
06:20:29 .devbin/hetsim validate experiments/validate-pcie.yaml --out /root/out/r/pc --gpu 2
06:24:54
