06:33:25 .devbin/hetsim validate experiments/validate-nvlink.yaml --out /root/out/r/nv --gpu 0
06:33:25 .devbin/hetsim validate experiments/validate-pcie.yaml --out /root/out/r/pc --gpu 2
06:37:50
