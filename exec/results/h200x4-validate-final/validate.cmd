06:55:09 .devbin/hetsim validate experiments/validate-nvlink.yaml --out /root/out/r/nv --gpu 0
06:55:09 .devbin/hetsim validate experiments/validate-pcie.yaml --out /root/out/r/pc --gpu 2
06:59:34
