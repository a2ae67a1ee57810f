"""Does a bf16 GEMM's speed depend on the data? Same 8192^3 product, inputs drawn three ways.
Events, 5 warm-ups, median of 30. Order: A B C A B C (each twice) to expose drift."""
import statistics, torch
def t(x, w, reps=30):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(5): x @ w.T
    out = []
    for _ in range(reps):
        s.record(); x @ w.T; e.record(); e.synchronize(); out.append(s.elapsed_time(e))
    return 2 * 8192**3 / statistics.median(out) / 1e9
n = 8192
mk = {
 "torch.rand(bf16)*2-1": lambda: torch.rand(n, n, device="cuda", dtype=torch.bfloat16) * 2 - 1,
 "uniform(-1,1) in fp32 -> bf16": lambda: torch.empty(n, n, device="cuda").uniform_(-1, 1).to(torch.bfloat16),
 "randn fp32 -> bf16": lambda: torch.randn(n, n, device="cuda").to(torch.bfloat16),
 "zeros": lambda: torch.zeros(n, n, device="cuda", dtype=torch.bfloat16),
}
for rnd in range(2):
    for name, f in mk.items():
        x, w = f(), f()
        print(f"round {rnd} {name:32s}: {t(x, w):7.1f} TFLOP/s", flush=True)
        del x, w
