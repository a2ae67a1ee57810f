.devbin/hetsim validate transfer --profile /root/out/r/profile.yaml --csv /root/out/r/validate.csv --report /root/out/r/validate.md
