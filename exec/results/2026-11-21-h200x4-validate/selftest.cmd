.devbin/hetsim exec selftest
