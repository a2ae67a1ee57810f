"""PyTorch baselines for hetsim-exec's probes, on the same machine, timed the same way
(CUDA events, warm-up first, median of repeats).

  python3 exec/scripts/torch-probe-baseline.py [--json OUT.json]

Measures: peer copy GPU0 -> GPU1 (dst.copy_(src); PyTorch enables peer access itself),
pinned D2H and H2D, device-to-device copy (read+write counted), and an 8192^3 bf16 GEMM.
"""
import argparse, json, statistics, sys
import torch

def time_ms(fn, stream_dev, warm=2, reps=10):
    s = torch.cuda.Event(enable_timing=True)
    e = torch.cuda.Event(enable_timing=True)
    out = []
    with torch.cuda.device(stream_dev):
        for i in range(warm + reps):
            s.record()
            fn()
            e.record()
            e.synchronize()
            if i >= warm:
                out.append(s.elapsed_time(e))
    return statistics.median(out)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    a = ap.parse_args()
    n = torch.cuda.device_count()
    res = {"torch": torch.__version__, "gpus": [torch.cuda.get_device_name(i) for i in range(n)], "peer": [], "d2h": [], "h2d": []}
    sizes = [4096 * 4 ** i for i in range(10)]  # 4 KiB .. 1 GiB
    big = sizes[-1]
    src = torch.empty(big, dtype=torch.uint8, device="cuda:0").fill_(90)
    if n >= 2:
        res["can_access_peer"] = torch.cuda.can_device_access_peer(0, 1)
        dst = torch.empty(big, dtype=torch.uint8, device="cuda:1")
        for b in sizes:
            reps = 30 if b <= 64 << 20 else 10
            ms = time_ms(lambda: dst[:b].copy_(src[:b], non_blocking=True), 0, reps=reps)
            res["peer"].append({"bytes": b, "ms": ms, "gbs": b / ms / 1e6})
            print(f"torch peer copy {b:>11} B: {b / ms / 1e6:8.2f} GB/s", flush=True)
        del dst
    pinned = torch.empty(big, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(big, dtype=torch.uint8, device="cuda:0")
    for b in sizes:
        reps = 30 if b <= 64 << 20 else 10
        ms = time_ms(lambda: pinned[:b].copy_(src[:b], non_blocking=True), 0, reps=reps)
        res["d2h"].append({"bytes": b, "ms": ms, "gbs": b / ms / 1e6})
        ms = time_ms(lambda: dev[:b].copy_(pinned[:b], non_blocking=True), 0, reps=reps)
        res["h2d"].append({"bytes": b, "ms": ms, "gbs": b / ms / 1e6})
        print(f"torch pinned {b:>11} B: D2H {res['d2h'][-1]['gbs']:7.2f} GB/s, H2D {res['h2d'][-1]['gbs']:7.2f} GB/s", flush=True)
    ms = time_ms(lambda: dev.copy_(src), 0, reps=20)
    res["d2d_gbs_rw"] = 2 * big / ms / 1e6
    print(f"torch device copy 1 GiB: {res['d2d_gbs_rw']:.0f} GB/s (read+write)")
    del pinned, dev, src
    x = torch.rand(8192, 8192, device="cuda:0", dtype=torch.bfloat16) * 2 - 1
    w = torch.rand(8192, 8192, device="cuda:0", dtype=torch.bfloat16) * 2 - 1
    ms = time_ms(lambda: x @ w.T, 0, warm=3, reps=20)
    res["gemm_8192_tflops"] = 2 * 8192 ** 3 / ms / 1e9
    print(f"torch bf16 GEMM 8192^3: {res['gemm_8192_tflops']:.1f} TFLOP/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)

if __name__ == "__main__":
    sys.exit(main())
