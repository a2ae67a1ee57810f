07:39:16 .devbin/hetsim validate experiments/validate-nvlink.yaml --out /root/out/r/nv --gpu 0
07:39:16 .devbin/hetsim validate experiments/validate-pcie.yaml --out /root/out/r/pc --gpu 2
07:43:40
