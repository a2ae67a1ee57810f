07:49:21 .devbin/hetsim validate experiments/validate-nvlink.yaml --out /root/out/r/nv --gpu 0
07:49:21 .devbin/hetsim validate experiments/validate-pcie.yaml --out /root/out/r/pc --gpu 2
07:53:45
