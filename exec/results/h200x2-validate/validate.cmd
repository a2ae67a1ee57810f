.devbin/hetsim validate experiments/validate-nvlink.yaml --out $R/nv
.devbin/hetsim validate experiments/validate-pcie.yaml --out $R/pc
