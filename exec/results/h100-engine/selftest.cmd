.devbin/hetsim-engine selftest
