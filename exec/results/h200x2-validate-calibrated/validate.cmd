.devbin/hetsim validate /root/out/r/validate-nvlink.yaml --out /root/out/r/nv
