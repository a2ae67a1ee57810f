// Kernels of hetsim's engine (exec/src/serve/model/gpu/): everything but the matrix products,
// which go to cuBLASLt, except a decode step's where ours were timed faster (gemv,
// gemm_skinny). bf16 storage, f32 arithmetic.
// Compiled at run time with NVRTC for sm_80+ (mma.sync bf16, cvt.bf16x2); no headers needed.

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short bf16;

#define NEG_INF (-__int_as_float(0x7f800000))

__device__ __forceinline__ float bf(bf16 x) { return __uint_as_float(((u32)x) << 16); }
__device__ __forceinline__ bf16 to_bf(float x) {
    bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}
// Two floats → packed bf16 pair, `lo` in the low half (the lower column / k index).
__device__ __forceinline__ u32 pack_bf2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ float lo_f(u32 w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi_f(u32 w) { return __uint_as_float(w & 0xffff0000u); }

__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ float block_sum(float v) {
    __shared__ float part[32];
    __syncthreads();
    v = warp_sum(v);
    int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if ((threadIdx.x & 31) == 0) part[w] = v;
    __syncthreads();
    float t = (threadIdx.x & 31) < nw ? part[threadIdx.x & 31] : 0.f;
    return warp_sum(t);
}
__device__ float block_max(float v) {
    __shared__ float part[32];
    __syncthreads();
    v = warp_max(v);
    int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if ((threadIdx.x & 31) == 0) part[w] = v;
    __syncthreads();
    float t = (threadIdx.x & 31) < nw ? part[threadIdx.x & 31] : NEG_INF;
    return warp_max(t);
}

// Programmatic dependent launch (sm_90+). The kernels of the host's EARLY_LAUNCH list
// (exec/src/model/gpu.rs) may be scheduled while the kernel ahead of them in the stream still
// runs, so a decode step's chain of small kernels does not pay a full launch between each two.
// Such a kernel calls this first: it lets its own successor be scheduled, then waits until its
// predecessor has finished and its writes are visible. (A no-op when launched plainly.)
__device__ __forceinline__ void after_predecessor() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Random weights: offset + scale·u, u uniform in [-1, 1) from (seed, index); the same numbers as
// exec/src/model/host.rs `uniform`, rounded to nearest bf16.
extern "C" __global__ void fill_uniform(bf16* p, u64 n, u64 seed, float scale, float offset) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        u64 r = mix64(seed ^ (i * 0x9E3779B97F4A7C15ULL));
        float u = (float)(r >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
        p[i] = to_bf(offset + scale * u);
    }
}

// Zero columns [k, kp) of a [rows, kp] matrix (the patch matrix's alignment padding).
extern "C" __global__ void zero_cols(bf16* p, u64 rows, u32 k, u32 kp) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    const u64 n = rows * (kp - k);
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        p[(i / (kp - k)) * kp + k + i % (kp - k)] = 0;
}

// Row norms: one warp per row in 16-byte vectors (d a multiple of 8), a row of up to 1024
// values held in registers between its passes; wider rows are read again (from L1) instead, as
// registers for 4096 values would cut the warps an SM can hold (and so the bandwidth) to an
// eighth; any other d in a plain loop.
__device__ __forceinline__ void unpack8(uint4 v, float* f) {
    const u32* w = (const u32*)&v;
#pragma unroll
    for (int i = 0; i < 4; i++) { f[2 * i] = lo_f(w[i]); f[2 * i + 1] = hi_f(w[i]); }
}
__device__ __forceinline__ uint4 pack8(const float* f) {
    return make_uint4(pack_bf2(f[0], f[1]), pack_bf2(f[2], f[3]), pack_bf2(f[4], f[5]), pack_bf2(f[6], f[7]));
}

// Sum over the `group` threads that share a row (whole warps: group a multiple of 32 dividing
// blockDim.x). Every thread of the block must call it, rows or not: it holds barriers.
__device__ float group_sum(float v, u32 group) {
    __shared__ float part[32];
    v = warp_sum(v);
    if (group == 32) return v;
    const u32 w = threadIdx.x >> 5, per = group >> 5, first = w / per * per;
    __syncthreads();  // the last call's readers are done with `part`
    if ((threadIdx.x & 31) == 0) part[w] = v;
    __syncthreads();
    float s = 0.f;
    for (u32 i = 0; i < per; i++) s += part[first + i];
    return s;
}

// layernorm: y = (x − mean) / std · w + b (CLIP); rmsnorm (b == nullptr, no mean): y = x / rms(x) · w.
// One row of d values by `group` threads (t = 0..group). The row's 16-byte vectors stay in
// registers when they fit (HELD per thread; the host sizes the group so a model's rows do): one
// read of x with every load in flight at once — a row of 4096 values is 512 vectors, 4 each
// for 128 threads. Wider rows are read again in each pass.
// `row_ok` false: a thread of a block's unused row slot, which still joins the reductions.
constexpr u32 HELD = 4;

// This thread's vectors of x, w and b (b: layernorm only) when the row fits in registers. The
// weights are loaded with x, before the reductions, so a row costs one round trip to memory.
struct HeldRow {
    uint4 x[HELD], w[HELD], b[HELD];
};

// f(c, x[c], w[c], b[c]) for each vector c = t + group·k of the row this thread covers: from
// registers when held (unrolled, so they stay registers), else read from memory.
template <typename F>
__device__ __forceinline__ void each_vec(bool held, const HeldRow& r, const uint4* xv, const uint4* wv,
                                         const uint4* bv, u32 dv, u32 t, u32 group, bool row_ok, F f) {
    if (!row_ok) return;
    if (held) {
#pragma unroll
        for (u32 k = 0; k < HELD; k++)
            if (t + group * k < dv) f(t + group * k, r.x[k], r.w[k], r.b[k]);
    } else {
        for (u32 c = t; c < dv; c += group) f(c, xv[c], wv[c], bv ? bv[c] : uint4{});
    }
}

__device__ void norm_row(const bf16* __restrict__ xr, const bf16* __restrict__ w, const bf16* __restrict__ b,
                         bf16* __restrict__ yr, u32 d, float eps, bool center, bool row_ok, u32 t, u32 group) {
    if (d % 8 == 0) {
        const uint4 *xv = (const uint4*)xr, *wv = (const uint4*)w, *bv = (const uint4*)b;
        const u32 dv = d / 8;
        const bool held = dv <= HELD * group;
        HeldRow r;
        if (held && row_ok) {
#pragma unroll
            for (u32 k = 0; k < HELD; k++) {
                const u32 c = t + group * k;
                if (c < dv) {
                    r.x[k] = xv[c];
                    r.w[k] = wv[c];
                    if (bv) r.b[k] = bv[c];
                }
            }
        }
        float s = 0.f;
        if (center)
            each_vec(held, r, xv, wv, bv, dv, t, group, row_ok, [&](u32, uint4 x, uint4, uint4) {
                float f[8];
                unpack8(x, f);
#pragma unroll
                for (int i = 0; i < 8; i++) s += f[i];
            });
        const float mean = center ? group_sum(s, group) / d : 0.f;
        // Σ(x − mean)²: exact where E[x²] − mean² would cancel.
        float ss = 0.f;
        each_vec(held, r, xv, wv, bv, dv, t, group, row_ok, [&](u32, uint4 x, uint4, uint4) {
            float f[8];
            unpack8(x, f);
#pragma unroll
            for (int i = 0; i < 8; i++) ss += (f[i] - mean) * (f[i] - mean);
        });
        const float inv = rsqrtf(group_sum(ss, group) / d + eps);
        each_vec(held, r, xv, wv, bv, dv, t, group, row_ok, [&](u32 c, uint4 x, uint4 wq, uint4 bq) {
            float f[8], wf[8], bf8[8];
            unpack8(x, f);
            unpack8(wq, wf);
            if (b) unpack8(bq, bf8);
#pragma unroll
            for (int i = 0; i < 8; i++) f[i] = (f[i] - mean) * inv * wf[i] + (b ? bf8[i] : 0.f);
            ((uint4*)yr)[c] = pack8(f);
        });
        return;
    }
    float s = 0.f;
    if (center)
        for (u32 i = t; row_ok && i < d; i += group) s += bf(xr[i]);
    const float mean = center ? group_sum(s, group) / d : 0.f;
    float v = 0.f;
    for (u32 i = t; row_ok && i < d; i += group) { float q = bf(xr[i]) - mean; v += q * q; }
    const float inv = rsqrtf(group_sum(v, group) / d + eps);
    for (u32 i = t; row_ok && i < d; i += group)
        yr[i] = to_bf((bf(xr[i]) - mean) * inv * bf(w[i]) + (b ? bf(b[i]) : 0.f));
}

// One row per group of `group` threads, blockDim.x / group rows per block, a grid that covers
// the rows once (exec/src/model/gpu.rs `NormLaunch`).
__device__ void norm_rows(const bf16* x, const bf16* w, const bf16* b, bf16* y, u32 rows, u32 d, float eps,
                          bool center, u32 group) {
    after_predecessor();
    const u32 r = blockIdx.x * (blockDim.x / group) + threadIdx.x / group;
    const bool ok = r < rows;
    const u64 off = ok ? (u64)r * d : 0;
    norm_row(x + off, w, b, y + off, d, eps, center, ok, threadIdx.x % group, group);
}

extern "C" __global__ void __launch_bounds__(256) rmsnorm(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y,
                                   u32 rows, u32 d, float eps, u32 group) {
    norm_rows(x, w, nullptr, y, rows, d, eps, false, group);
}

extern "C" __global__ void __launch_bounds__(256) layernorm(const bf16* __restrict__ x, const bf16* __restrict__ w, const bf16* __restrict__ b,
                                     bf16* __restrict__ y, u32 rows, u32 d, float eps, u32 group) {
    norm_rows(x, w, b, y, rows, d, eps, true, group);
}

// out[r, i] = silu(gu[r, i]) · gu[r, I + i]  (gate and up halves of the fused activation)
extern "C" __global__ void silu_mul(const bf16* __restrict__ gu, bf16* __restrict__ out, u32 n, u32 inter) {
    after_predecessor();
    const u64 stride = (u64)gridDim.x * blockDim.x;
    if (inter % 8 == 0) {  // 16-byte vectors
        const u32 iv = inter / 8;
        const u64 total = (u64)n * iv;
        for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
            const u64 r = i / iv, c = i % iv;
            float g[8], u[8];
            unpack8(((const uint4*)gu)[r * 2 * iv + c], g);
            unpack8(((const uint4*)gu)[r * 2 * iv + iv + c], u);
#pragma unroll
            for (int k = 0; k < 8; k++) g[k] = g[k] / (1.f + __expf(-g[k])) * u[k];
            ((uint4*)out)[i] = pack8(g);
        }
        return;
    }
    const u64 total = (u64)n * inter;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        u64 r = i / inter, c = i % inter;
        float g = bf(gu[r * 2 * inter + c]), u = bf(gu[r * 2 * inter + inter + c]);
        out[i] = to_bf(g / (1.f + __expf(-g)) * u);
    }
}

// In-place activation over n values: 16-byte vectors (x is 16-byte aligned: device
// allocations and row starts of multiples of 8 values), then the tail.
template <typename F>
__device__ void map_in_place(bf16* x, u64 n, F f) {
    const u64 stride = (u64)gridDim.x * blockDim.x, first = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 nv = ((u64)x % 16 == 0) ? n / 8 : 0;
    for (u64 i = first; i < nv; i += stride) {
        float v[8];
        unpack8(((uint4*)x)[i], v);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = f(v[k]);
        ((uint4*)x)[i] = pack8(v);
    }
    for (u64 i = nv * 8 + first; i < n; i += stride) x[i] = to_bf(f(bf(x[i])));
}

extern "C" __global__ void gelu_erf(bf16* x, u64 n) {
    map_in_place(x, n, [](float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); });
}

extern "C" __global__ void quick_gelu(bf16* x, u64 n) {
    map_in_place(x, n, [](float v) { return v / (1.f + __expf(-1.702f * v)); });
}

extern "C" __global__ void add(const bf16* a, const bf16* b, bf16* out, u64 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        out[i] = to_bf(bf(a[i]) + bf(b[i]));
}

// Input rows of a prompt: row r is image row img_row[r] when that is ≥ 0, else the token's
// embedding. 16-byte vectors (d a multiple of 8).
extern "C" __global__ void embed_splice(const int* __restrict__ tokens, const int* __restrict__ img_row,
                                        const uint4* __restrict__ table, const uint4* __restrict__ img,
                                        uint4* __restrict__ out, u32 n, u32 dv) {
    after_predecessor();
    const u64 total = (u64)n * dv;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / dv, c = i % dv;
        int ir = img_row[r];
        out[i] = ir >= 0 ? img[(u64)ir * dv + c] : table[(u64)tokens[r] * dv + c];
    }
}

// Rows idx[i] of x [*, d] → out [m, d] (e.g. each sequence's last token before the LM head).
extern "C" __global__ void gather_rows(const bf16* __restrict__ x, const int* __restrict__ idx, bf16* __restrict__ out,
                                       u32 m, u32 d) {
    after_predecessor();
    const u64 total = (u64)m * d;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x)
        out[i] = x[(u64)idx[i / d] * d + i % d];
}

// Pixels [B, C, S, S] → patches [B·(S/p)², kp], each row [channel][y][x] as the conv kernel,
// zero beyond C·p·p.
extern "C" __global__ void im2col(const bf16* __restrict__ px, bf16* __restrict__ out, u32 images, u32 ch, u32 size,
                                  u32 p, u32 kp) {
    const u32 side = size / p, k = ch * p * p;
    const u64 total = (u64)images * side * side * kp;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        u32 col = i % kp;
        u64 row = i / kp;
        bf16 v = 0;
        if (col < k) {
            u32 c = col / (p * p), y = (col / p) % p, x = col % p;
            u32 patch = row % (side * side);
            u64 img = row / (side * side);
            u32 py = patch / side, pxx = patch % side;
            v = px[((img * ch + c) * size + py * p + y) * size + pxx * p + x];
        }
        out[i] = v;
    }
}

// [CLS; patches] + positions: patch_out [B·np, d] → out [B·(np+1), d].
extern "C" __global__ void clip_embed(const bf16* __restrict__ patch_out, const bf16* __restrict__ cls,
                                      const bf16* __restrict__ pos, bf16* __restrict__ out, u32 images, u32 np, u32 d) {
    const u64 total = (u64)images * (np + 1) * d;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        u32 c = i % d;
        u64 r = i / d;
        u32 t = r % (np + 1);
        u64 img = r / (np + 1);
        float v = t == 0 ? bf(cls[c]) : bf(patch_out[(img * np + t - 1) * d + c]);
        out[i] = to_bf(v + bf(pos[(u64)t * d + c]));
    }
}

// Drop each image's CLS row: x [B·(np+1), d] → out [B·np, d].
extern "C" __global__ void drop_cls(const bf16* __restrict__ x, bf16* __restrict__ out, u32 images, u32 np, u32 d) {
    const u64 total = (u64)images * np * d;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        u32 c = i % d;
        u64 r = i / d;
        out[i] = x[((r / np) * (np + 1) + r % np + 1) * d + c];
    }
}

// Qwen2.5-VL's patches of one image: output row i is the patch at (row, col) = rc[2i], rc[2i+1]
// of the image px [ch, height, width] (bf16), flattened as the conv kernel is,
// [channel][frame][y][x], the image repeated in each of `frames` frames.
extern "C" __global__ void qwen_patchify(const bf16* __restrict__ px, const int* __restrict__ rc,
                                         bf16* __restrict__ out, u32 n, u32 ch, u32 height, u32 width, u32 p,
                                         u32 frames) {
    const u32 k = ch * frames * p * p;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (u64)n * k; i += (u64)gridDim.x * blockDim.x) {
        const u32 row = i / k, e = i % k;
        const u32 x = e % p, y = e / p % p, c = e / (p * p * frames);
        const u32 r = rc[2 * row], col = rc[2 * row + 1];
        out[i] = px[((u64)c * height + r * p + y) * width + col * p + x];
    }
}

// The ViT's 2-D rotary (Qwen2.5-VL) in place on `heads` heads of each row of qkv [n, stride]
// (q heads then k heads, `head_stride` apart), each rotating its first `rot` values: pair
// (i, i + rot/2) turns by row · inv_freq[i] for i < rot/4 and col · inv_freq[i − rot/4] after
// (rc: row, col per token; inv_freq: rot/4 f32 — angles stay below a few hundred radians, where
// f32 is exact enough for a bf16 result). A thread per 8 pairs (16-byte vectors); rot/2 a
// multiple of 8.
extern "C" __global__ void rope_2d(bf16* __restrict__ qkv, const int* __restrict__ rc,
                                   const float* __restrict__ inv_freq, u32 n, u32 stride, u32 heads,
                                   u32 head_stride, u32 rot) {
    const u32 half = rot / 2, quarter = rot / 4, hv = half / 8;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (u64)n * heads * hv;
         i += (u64)gridDim.x * blockDim.x) {
        const u32 j0 = i % hv * 8, h = i / hv % heads, tok = i / ((u64)hv * heads);
        const float r = rc[2 * tok], c = rc[2 * tok + 1];
        bf16* v = qkv + (u64)tok * stride + (u64)h * head_stride;
        uint4* lo = (uint4*)(v + j0);
        uint4* hi = (uint4*)(v + half + j0);
        float x0[8], x1[8], y0[8], y1[8];
        unpack8(*lo, x0);
        unpack8(*hi, x1);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const u32 j = j0 + k;
            const float a = j < quarter ? r * inv_freq[j] : c * inv_freq[j - quarter];
            float sn, cs;
            sincosf(a, &sn, &cs);
            y0[k] = x0[k] * cs - x1[k] * sn;
            y1[k] = x1[k] * cs + x0[k] * sn;
        }
        *lo = pack8(y0);
        *hi = pack8(y1);
    }
}

// ---------------------------------------------------------------------------------------------
// Flash attention over variable-length sequences packed without padding (cu_seqlens), full or
// causal: the ViT (per image) and the decoder's prefill. Tensor cores via mma.sync m16n8k16 bf16.
// Q, K, V are read from the fused qkv activation [tokens, stride]: head h's q at column h·D,
// kv head g's k at k_off + g·D and v at v_off + g·D. Output [tokens, out_stride], head h at h·D.
// Block: 4 warps, BQ query rows (16 or 32 per warp, see below); K/V tiles of 64 keys (32 at
// D = 128) in shared memory, the next tile copied by cp.async while the current one is used.
// grid = (ceil(max_len / BQ), heads, sequences).

// Not volatile: a pure function of its operands, free to be scheduled among its neighbours.
__device__ __forceinline__ void mma_bf16(float* c, const u32* a, u32 b0, u32 b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x in one MUFU instruction (exp2f without fast-math adds a denormal-range fix-up around it;
// relative error 2⁻²², far below bf16's 2⁻⁹). 2^−inf = 0.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Four 8×8 bf16 matrices from shared memory, lane i giving the address of row i % 8 of matrix
// i / 8: as mma B fragments (trans: the matrices' rows are the k index).
__device__ __forceinline__ void ldmatrix_x4(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

// One warp's MT·16 query rows against one tile of BK keys starting at j0 (K and V rows in shared
// memory, LD apart): online softmax into o, m, l. Query tile t of the warp holds rows
// row0 + t·16 + g (r = 0) and + 8 (r = 1) in this lane. Every K or V fragment read from shared
// memory serves all MT tiles: with 16 rows a warp, those reads, not the tensor cores, set the
// pace at D = 64.
template <int D, int BK, int LD, int MT>
__device__ __forceinline__ void attend_tile(const bf16* Ks, const bf16* Vs, const u32 (&qa)[MT][D / 16][4],
                                            float (&o)[MT][D / 8][4], float (&m)[MT][2], float (&l)[MT][2], int j0,
                                            int len, int key_lim, int causal, int row0, float sl2, int g, int tq) {
    const int lane = threadIdx.x & 31, mi = lane >> 3, mr = lane & 7;
    // S = Q·Kᵀ for the rows × BK keys: tiles of 8 keys, whole tiles past key_lim skipped (masked).
    // K fragments by ldmatrix: matrices (keys nt·8.., dims kk·16 + 0/8, then (kk+1)·16 + 0/8).
    const u32 kbase = smem_addr(Ks + mr * LD + (mi >> 1) * 16 + (mi & 1) * 8);
    float s[MT][BK / 8][4];
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
        for (int nt = 0; nt < BK / 8; nt++) s[t][nt][0] = s[t][nt][1] = s[t][nt][2] = s[t][nt][3] = 0.f;
    // k outer, keys inner: consecutive products accumulate into different scores, so they
    // overlap instead of waiting on each other. Only a tile reaching past key_lim tests each
    // group of 8 keys: a test per group splits the loop into blocks the compiler cannot
    // interleave.
    const bool full = j0 + BK <= key_lim;
    auto scores = [&](bool guarded) {
#pragma unroll
        for (int kk = 0; kk < D / 16; kk += 2) {
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++) {
                if (guarded && j0 + nt * 8 >= key_lim) continue;
                u32 b[4];
                ldmatrix_x4(b, kbase + (nt * 8 * LD + kk * 16) * 2);
#pragma unroll
                for (int t = 0; t < MT; t++) {
                    mma_bf16(s[t][nt], qa[t][kk], b[0], b[1]);
                    mma_bf16(s[t][nt], qa[t][kk + 1], b[2], b[3]);
                }
            }
        }
    };
    if (full)
        scores(false);
    else
        scores(true);
    // Mask where the tile crosses the end or the diagonal, online softmax. Scores stay unscaled
    // (the scale is positive, so maxima commute with it) and each exponent is one FMA:
    // exp(scale·(s − m)) = exp2(s·sl2 − m·sl2). Issue slots, not tensor cores, bound this loop
    // at D = 64, so every instruction per score counts.
    // s[t][nt][0..1]: row r = 0, keys +tq·2, +1; [2..3]: row r = 1.
    const bool whole = j0 + BK <= len && (!causal || j0 + BK - 1 <= row0);
    u32 pa[MT][BK / 16][4];
#pragma unroll
    for (int t = 0; t < MT; t++) {
        const int rows[2] = {row0 + t * 16 + g, row0 + t * 16 + g + 8};
        // Two loops, not one with the test inside: predicated-off mask code still takes issue
        // slots in every tile, and only the last tiles need it.
        if (!whole) {
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int key = j0 + nt * 8 + tq * 2 + (e & 1);
                    if (key >= len || (causal && key > rows[e >> 1])) s[t][nt][e] = NEG_INF;
                }
            }
        }
        float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int nt = 0; nt < BK / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[t][nt][e]);
        }
#pragma unroll
        // Lazy rescaling: the running max m moves only when a tile's max passes it by more
        // than 8 (log2 units), so exponents stay ≤ 2⁸ — exact enough in f32 and in P's bf16 —
        // and most tiles skip rescaling o. l is kept per lane (the row's 4 lanes share m) and
        // summed across them once, at the end.
        float c[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            for (int o2 = 1; o2 < 4; o2 <<= 1) mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], o2));
            // False while the row has seen nothing (−inf − −inf is NaN).
            const bool grow = (mx[r] - m[t][r]) * sl2 > 8.f;
            c[r] = grow ? fast_exp2((m[t][r] - mx[r]) * sl2) : 1.f;  // 0 the first time
            if (grow) m[t][r] = mx[r];
            // A row with nothing visible yet keeps m = −inf: its scores are all −inf, so any
            // finite offset gives zeros.
            const float off = m[t][r] == NEG_INF ? 0.f : m[t][r] * sl2;
            float ps = 0.f;
#pragma unroll
            for (int nt = 0; nt < BK / 8; nt++) {
#pragma unroll
                for (int e = 2 * r; e < 2 * r + 2; e++) {
                    s[t][nt][e] = fast_exp2(fmaf(s[t][nt][e], sl2, -off));
                    ps += s[t][nt][e];
                }
            }
            l[t][r] = l[t][r] * c[r] + ps;
        }
        if (__any_sync(0xffffffffu, c[0] != 1.f || c[1] != 1.f)) {
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++) {
                o[t][dt][0] *= c[0];
                o[t][dt][1] *= c[0];
                o[t][dt][2] *= c[1];
                o[t][dt][3] *= c[1];
            }
        }
        // P's accumulator layout is exactly the A fragment of the next product.
#pragma unroll
        for (int ks = 0; ks < BK / 16; ks++) {
            pa[t][ks][0] = pack_bf2(s[t][2 * ks][0], s[t][2 * ks][1]);
            pa[t][ks][1] = pack_bf2(s[t][2 * ks][2], s[t][2 * ks][3]);
            pa[t][ks][2] = pack_bf2(s[t][2 * ks + 1][0], s[t][2 * ks + 1][1]);
            pa[t][ks][3] = pack_bf2(s[t][2 * ks + 1][2], s[t][2 * ks + 1][3]);
        }
    }
    // O += P·V. V fragments by ldmatrix.trans: matrices (keys +0..7, dims dt·8),
    // (keys +8..15, dt·8), (+0..7, (dt+1)·8), (+8..15, (dt+1)·8).
    const u32 vbase = smem_addr(Vs + ((mi & 1) * 8 + mr) * LD + (mi >> 1) * 8);
    auto values = [&](bool guarded) {
#pragma unroll
        for (int ks = 0; ks < BK / 16; ks++) {
            if (guarded && j0 + ks * 16 >= key_lim) continue;  // P is zero there
#pragma unroll
            for (int dt = 0; dt < D / 8; dt += 2) {
                u32 b[4];
                ldmatrix_x4_trans(b, vbase + (ks * 16 * LD + dt * 8) * 2);
#pragma unroll
                for (int t = 0; t < MT; t++) {
                    mma_bf16(o[t][dt], pa[t][ks], b[0], b[1]);
                    mma_bf16(o[t][dt + 1], pa[t][ks], b[2], b[3]);
                }
            }
        }
    };
    if (full)
        values(false);
    else
        values(true);
}

// 4 warps of MT·16 query rows: BQ = 64·MT rows a block.
template <int D, int MT>
__device__ void flash_attn(const bf16* __restrict__ qkv, bf16* __restrict__ out, const int* __restrict__ cu,
                           u32 stride, u32 out_stride, u32 heads, u32 kv_heads, u32 k_off, u32 v_off,
                           int causal, float scale) {
    // Two K/V tiles in shared memory (the next one copied while this one is used): 37 KB of
    // the 48 KB static limit at D = 64 with 64 keys a tile, 35 KB at D = 128 with 32.
    constexpr int WR = 16 * MT, BQ = 4 * WR, BK = D == 64 ? 64 : 32, PAD = 8, LD = D + PAD;
    __shared__ __align__(16) bf16 Ks[2][BK * LD];
    __shared__ __align__(16) bf16 Vs[2][BK * LD];
    const int seq = blockIdx.z, h = blockIdx.y;
    const int base = cu[seq], len = cu[seq + 1] - base;
    const int q_block = blockIdx.x * BQ;
    if (q_block >= len) return;
    const int kvh = h / (heads / kv_heads);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int row0 = q_block + warp * WR;          // the warp's first query row
    const float sl2 = scale * 1.4426950408889634f;  // exp(x) = exp2(x·log2 e)

    // Q fragments (A operand) of each tile, rows +g and +g+8, all of D.
    u32 qa[MT][D / 16][4];
#pragma unroll
    for (int t = 0; t < MT; t++) {
        const int r0 = row0 + t * 16 + g, r1 = r0 + 8;
        const bf16* q0 = qkv + (u64)(base + r0) * stride + h * D;
        const bf16* q1 = qkv + (u64)(base + r1) * stride + h * D;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const int c0 = kk * 16 + tq * 2;
            qa[t][kk][0] = r0 < len ? *(const u32*)(q0 + c0) : 0u;
            qa[t][kk][1] = r1 < len ? *(const u32*)(q1 + c0) : 0u;
            qa[t][kk][2] = r0 < len ? *(const u32*)(q0 + c0 + 8) : 0u;
            qa[t][kk][3] = r1 < len ? *(const u32*)(q1 + c0 + 8) : 0u;
        }
    }
    float o[MT][D / 8][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int t = 0; t < MT; t++) {
#pragma unroll
        for (int i = 0; i < D / 8; i++) o[t][i][0] = o[t][i][1] = o[t][i][2] = o[t][i][3] = 0.f;
        m[t][0] = m[t][1] = NEG_INF;
        l[t][0] = l[t][1] = 0.f;
    }

    const int kv_end = causal ? min(len, q_block + BQ) : len;
    // Keys this warp can see (warp-uniform, so whole tiles past it are skipped): a sequence
    // of 577 tokens ends in a 1-key tile and a 1-row query block.
    const int key_lim = causal ? min(len, row0 + WR) : len;
    const bool idle = row0 >= len;
    // Copy the tile of keys [j0, j0 + BK) into buffer b (cp.async; zeros past the end). Each of
    // the 128 threads moves the same 16-byte column lc of rows lr, lr + 128 / CPR, ...: the loop is
    // unrolled and its addresses are strength-reduced, not divided out per chunk.
    constexpr int CPR = D / 8, ROWS_PER_PASS = 128 / CPR;
    const int lr = threadIdx.x / CPR, lc = threadIdx.x % CPR * 8;
    const bf16* kv_src = qkv + (u64)(base + lr) * stride + kvh * D + lc;
    auto load = [&](int b, int j0) {
#pragma unroll
        for (int p = 0; p < BK / ROWS_PER_PASS; p++) {
            const int r = lr + p * ROWS_PER_PASS;
            bf16* kd = &Ks[b][r * LD + lc];
            bf16* vd = &Vs[b][r * LD + lc];
            if (j0 + r < len) {
                const bf16* row = kv_src + (u64)(j0 + p * ROWS_PER_PASS) * stride;
                cp_async16(kd, row + k_off);
                cp_async16(vd, row + v_off);
            } else {
                *(uint4*)kd = make_uint4(0, 0, 0, 0);
                *(uint4*)vd = make_uint4(0, 0, 0, 0);
            }
        }
        cp_async_commit();
    };
    load(0, 0);
    int buf = 0;
    for (int j0 = 0; j0 < kv_end; j0 += BK, buf ^= 1) {
        if (j0 + BK < kv_end) {
            load(buf ^ 1, j0 + BK);  // that buffer was released by the barrier ending the last tile
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        // A warp whose rows all lie past the end only helps load the tiles.
        if (!idle)
            attend_tile<D, BK, LD, MT>(Ks[buf], Vs[buf], qa, o, m, l, j0, len, key_lim, causal, row0, sl2, g, tq);
        __syncthreads();
    }
#pragma unroll
    for (int t = 0; t < MT; t++) {
        const int r0 = row0 + t * 16 + g, r1 = r0 + 8;
#pragma unroll
        for (int r = 0; r < 2; r++)
            for (int o2 = 1; o2 < 4; o2 <<= 1) l[t][r] += __shfl_xor_sync(0xffffffffu, l[t][r], o2);
        const float i0 = l[t][0] > 0.f ? 1.f / l[t][0] : 0.f, i1 = l[t][1] > 0.f ? 1.f / l[t][1] : 0.f;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            const int c = h * D + dt * 8 + tq * 2;
            if (r0 < len) *(u32*)(out + (u64)(base + r0) * out_stride + c) = pack_bf2(o[t][dt][0] * i0, o[t][dt][1] * i0);
            if (r1 < len) *(u32*)(out + (u64)(base + r1) * out_stride + c) = pack_bf2(o[t][dt][2] * i1, o[t][dt][3] * i1);
        }
    }
}

// One 16-row tile a warp, 4 warps. Measured on an H100 for the ViT (D = 64): two tiles a warp
// halve the shared-memory reads per product but need 229 registers (2 blocks an SM against 4),
// 10 % slower; 8 warps sharing each K/V tile, 22 % slower. At D = 128 two tiles would not fit
// the registers. (exec/src/model/gpu.rs `flash_attn_kernel` knows the rows.) At D = 64 the
// kernel is issue-bound with 4 warps a scheduler: asking for 5 blocks an SM (≤ 102 registers)
// measured 4 % faster than the 128 registers it takes unasked.
extern "C" __global__ void __launch_bounds__(128, 5) flash_attn_d64(const bf16* qkv, bf16* out, const int* cu, u32 stride,
                                                                 u32 out_stride, u32 heads, u32 kv_heads, u32 k_off,
                                                                 u32 v_off, int causal, float scale) {
    flash_attn<64, 1>(qkv, out, cu, stride, out_stride, heads, kv_heads, k_off, v_off, causal, scale);
}
extern "C" __global__ void __launch_bounds__(128) flash_attn_d128(const bf16* qkv, bf16* out, const int* cu, u32 stride,
                                                                  u32 out_stride, u32 heads, u32 kv_heads, u32 k_off,
                                                                  u32 v_off, int causal, float scale) {
    flash_attn<128, 1>(qkv, out, cu, stride, out_stride, heads, kv_heads, k_off, v_off, causal, scale);
}

// ---------------------------------------------------------------------------------------------
// Paged KV cache. Pool layout per layer: [block][K|V][kv_head][slot 0..16][head_dim] (the same
// as kernels/kv_transfer.cu, so a request's cache can be shipped with kv_gather).
#define KV_BLOCK 16

// LLaMA rotary embedding ("rotate half") in place on the q and k heads of a fused qkv
// activation [n, stride] = [q heads | k heads | v heads] · head_dim, and the token's k (after
// rope) and v written into its cache slot (block·16 + slot; < 0: not written, for padded rows
// of a batch). One launch for what the attention needs before it can run. A thread per 16-byte
// vector: 8 rotated pairs (frequencies from the table inv_freq[head_dim / 2], computed once on
// the host), or 8 values of v. head_dim a multiple of 16; n · vectors per token < 2³².
//
// M-RoPE (Qwen2-VL): frequency i takes its position from plane 0 (i < sec0), 1 (i < sec0 + sec1)
// or 2 of `pos`, planes `plane` ints apart ([3][n]); plane = 0 reads one position per token
// (LLaMA: sec0 = head_dim / 2).
extern "C" __global__ void rope_kv_append(bf16* __restrict__ qkv, const int* __restrict__ pos,
                                          const int* __restrict__ slots, bf16* __restrict__ pool,
                                          const double* __restrict__ inv_freq, u32 n, u32 stride, u32 heads,
                                          u32 kv_heads, u32 head_dim, u32 plane, u32 sec0, u32 sec1) {
    after_predecessor();
    const u32 half = head_dim / 2, hv = half / 8, dv = head_dim / 8;
    const u32 rotated = (heads + kv_heads) * hv;  // vectors of pairs per token, then v's vectors
    const u32 per_token = rotated + kv_heads * dv;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n * per_token; i += gridDim.x * blockDim.x) {
        const u32 tok = i / per_token, e = i % per_token;
        const int slot = slots[tok];
        bf16* row = qkv + (u64)tok * stride;
        // Row of head kh of K (kv = 0) or V (kv = 1) in the slot's cache block.
        auto cache_row = [&](u32 kv, u32 kh) {
            return pool + ((((u64)(slot / KV_BLOCK) * 2 + kv) * kv_heads + kh) * KV_BLOCK + slot % KV_BLOCK) * head_dim;
        };
        if (e < rotated) {
            const u32 h = e / hv, j0 = e % hv * 8;
            uint4* lo = (uint4*)(row + (u64)h * head_dim + j0);
            uint4* hi = (uint4*)(row + (u64)h * head_dim + half + j0);
            float x0[8], x1[8], y0[8], y1[8];
            unpack8(*lo, x0);
            unpack8(*hi, x1);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                // The angle in f64 (positions reach thousands of radians), reduced to [-π, π],
                // then f32 sine and cosine: as exact as f64 throughout for a bf16 result, far
                // cheaper.
                const u32 fi = j0 + k, axis = fi < sec0 ? 0 : fi < sec0 + sec1 ? 1 : 2;
                const double a = (double)pos[axis * plane + tok] * inv_freq[fi];
                const float red = (float)(a - 6.283185307179586 * rint(a * 0.15915494309189535));
                float sn, cs;
                sincosf(red, &sn, &cs);
                y0[k] = x0[k] * cs - x1[k] * sn;
                y1[k] = x1[k] * cs + x0[k] * sn;
            }
            const uint4 a = pack8(y0), b = pack8(y1);
            *lo = a;
            *hi = b;
            if (h >= heads && slot >= 0) {
                bf16* k = cache_row(0, h - heads);
                *(uint4*)(k + j0) = a;
                *(uint4*)(k + half + j0) = b;
            }
        } else if (slot >= 0) {
            const u32 f = e - rotated, kh = f / dv, c = f % dv;
            ((uint4*)cache_row(1, kh))[c] = ((const uint4*)(row + (u64)(heads + kv_heads + kh) * head_dim))[c];
        }
    }
}

// Decode attention, one query token per sequence, K/V read through the block table.
// Split over the context (flash-decoding): block (head, seq, p) covers tokens
// [p·part, p·part + part), part ≤ PART, and writes an unnormalised partial result; the last
// block of a (seq, head) to finish merges them into out (counted in `done`, zero between
// launches: the merging block resets it) — one launch per layer instead of two. The partition
// is the grid's slowest index: the grid covers the longest context, so the blocks past a
// shorter sequence's end, which leave at once, are scheduled after every first partition
// instead of between them (at batch 64 of Qwen2.5-VL-7B, four of five blocks).
// Small batches take short parts, so enough blocks read the cache at once.
// head_dim 128: a half-warp (16 lanes × 8 values) holds one key or value row; each of the 8
// half-warps has U keys in flight. A part of at most 8·U tokens is one chunk: its values are
// loaded with its keys, so the block waits on memory once, not twice (what short parts need:
// at batch 1 every layer waits on its attention).
#define PART 256
#define DECODE_ATTN_ARGS                                                                                 \
    const bf16 *__restrict__ qkv, const int *__restrict__ tables, const int *__restrict__ ctx,          \
        const bf16 *__restrict__ pool, float *part_o, float *part_ml, unsigned *__restrict__ done,      \
        bf16 *__restrict__ out, u32 stride, u32 heads, u32 kv_heads, u32 max_blocks, u32 max_parts, u32 part, \
        u32 out_stride, float scale, u32 wave
// The end of a decode-attention block (y, seq, p) whose partial results for query heads h0 …
// h0 + G − 1 are written: publish them and count the block; the last of the `arrivals` (seq, y)
// blocks to finish merges every partition's into out and resets the count.
__device__ __forceinline__ void merge_partitions(const float* part_o, const float* part_ml, unsigned* __restrict__ done,
                                                 bf16* __restrict__ out, u32 heads, u32 max_parts, u32 part,
                                                 u32 out_stride, int b, int h0, int G, int len, u32 arrivals) {
    __shared__ bool merge;
    __threadfence();
    __syncthreads();
    unsigned* counter = &done[(u64)b * gridDim.x + blockIdx.x];
    if (threadIdx.x == 0) merge = atomicAdd(counter, 1u) == arrivals - 1;
    __syncthreads();
    if (!merge) return;
    __threadfence();
    // Other blocks' results are read from L2 (__ldcg): this SM's L1 may hold none of them, but
    // must not serve stale lines either. A warp per query head, four dimensions a lane; one pass
    // over the partitions with a running maximum, so the loads of several partitions are in
    // flight at once instead of one after another.
    const int parts = (len + part - 1) / part, lane = threadIdx.x & 31;
    for (int g = threadIdx.x >> 5; g < G; g += blockDim.x >> 5) {
        const u64 base = ((u64)b * heads + h0 + g) * max_parts;
        float m = NEG_INF, l = 0.f, o[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
        for (int q = 0; q < parts; q++) {
            const float mq = __ldcg(part_ml + (base + q) * 2), lq = __ldcg(part_ml + (base + q) * 2 + 1);
            const float4 oq = __ldcg((const float4*)(part_o + (base + q) * 128) + lane);
            const float mn = fmaxf(m, mq);
            if (mn == NEG_INF) continue;  // no key so far (−inf − −inf would be NaN)
            const float a = __expf(m - mn), c = __expf(mq - mn);
            l = l * a + lq * c;
            o[0] = o[0] * a + oq.x * c;
            o[1] = o[1] * a + oq.y * c;
            o[2] = o[2] * a + oq.z * c;
            o[3] = o[3] * a + oq.w * c;
            m = mn;
        }
        // A sequence of length 0 (batch padding) gets zeros.
        const float inv = l > 0.f ? 1.f / l : 0.f;
        *(uint2*)(out + (u64)b * out_stride + (h0 + g) * 128 + lane * 4) =
            make_uint2(pack_bf2(o[0] * inv, o[1] * inv), pack_bf2(o[2] * inv, o[3] * inv));
    }
    if (threadIdx.x == 0) *counter = 0;
}

// Block (y, seq, p) serves query heads y·G … y·G + G − 1, which share one KV head: G = 1 (a
// block per query head: the most blocks, for small batches) or G = heads / kv_heads (GQA's
// whole group: each key and value row read once for all of them, for large batches).
template <int U, int G>
__device__ __forceinline__ void decode_attn_body(DECODE_ATTN_ARGS) {
    after_predecessor();
    __shared__ float sc[G][PART];
    __shared__ float red[8][128];
    const int p = blockIdx.z, b = blockIdx.y, h0 = blockIdx.x * G, kvh = h0 / (heads / kv_heads);
    const int len = ctx[b];
    // Partial result q of query head h of this sequence.
    auto slot = [&](int h, int q) { return ((u64)b * heads + h) * max_parts + q; };
    const int start = p * part;
    if (start >= len) {
        if (threadIdx.x < G) {
            part_ml[slot(h0 + threadIdx.x, p) * 2] = NEG_INF;
            part_ml[slot(h0 + threadIdx.x, p) * 2 + 1] = 0.f;
        }
    } else {
        const int end = min(len, start + (int)part), n = end - start;
        const int l16 = threadIdx.x & 15, hw = threadIdx.x >> 4;  // 8 half-warps
        const int* tab = tables + (u64)b * max_blocks;
        float q[G][8];
#pragma unroll
        for (int g = 0; g < G; g++) {
            uint4 qv = *(const uint4*)(qkv + (u64)b * stride + (h0 + g) * 128 + l16 * 8);
            const u32* w = (const u32*)&qv;
#pragma unroll
            for (int i = 0; i < 4; i++) { q[g][2 * i] = lo_f(w[i]) * scale; q[g][2 * i + 1] = hi_f(w[i]) * scale; }
        }
        const u64 head_off = (u64)kvh * KV_BLOCK * 128 + l16 * 8;
        const u64 kv_step = (u64)kv_heads * KV_BLOCK * 128;  // K → V within a block
        // Scores. The loop bound must be the same for the whole warp (both half-warps), because
        // the shuffles below need every lane.
        const bool one_chunk = n <= 8 * U;
        uint4 vr[U];
        for (int b0 = 0; b0 < n; b0 += 8 * U) {
            const int t0 = b0 + hw;
            uint4 kr[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                int t = t0 + u * 8;
                if (t < n) {
                    int tok = start + t;
                    u64 blk = (u64)tab[tok / KV_BLOCK];
                    const bf16* row = pool + blk * 2 * kv_step + head_off + (tok % KV_BLOCK) * 128;
                    kr[u] = *(const uint4*)row;
                    if (one_chunk) vr[u] = *(const uint4*)(row + kv_step);
                }
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                int t = t0 + u * 8;
                const u32* w = (const u32*)&kr[u];
                float k8[8];
#pragma unroll
                for (int i = 0; i < 4; i++) { k8[2 * i] = lo_f(w[i]); k8[2 * i + 1] = hi_f(w[i]); }
#pragma unroll
                for (int g = 0; g < G; g++) {
                    float acc = 0.f;
#pragma unroll
                    for (int i = 0; i < 8; i++) acc += q[g][i] * k8[i];
                    for (int o = 8; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
                    if (t < n && l16 == 0) sc[g][t] = acc;
                }
            }
        }
        __syncthreads();
        float mx[G], sum[G];
#pragma unroll
        for (int g = 0; g < G; g++) {
            float m = NEG_INF;
            for (int t = threadIdx.x; t < n; t += blockDim.x) m = fmaxf(m, sc[g][t]);
            mx[g] = block_max(m);
            float sm = 0.f;
            for (int t = threadIdx.x; t < n; t += blockDim.x) { float e = __expf(sc[g][t] - mx[g]); sc[g][t] = e; sm += e; }
            sum[g] = block_sum(sm);  // its barrier also publishes sc
        }
        float acc[G][8];
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int i = 0; i < 8; i++) acc[g][i] = 0.f;
        for (int b0 = 0; b0 < n; b0 += 8 * U) {
            const int t0 = b0 + hw;
            if (!one_chunk) {
#pragma unroll
                for (int u = 0; u < U; u++) {
                    int t = t0 + u * 8;
                    if (t < n) {
                        int tok = start + t;
                        u64 blk = (u64)tab[tok / KV_BLOCK];
                        vr[u] = *(const uint4*)(pool + (blk * 2 + 1) * kv_step + head_off + (tok % KV_BLOCK) * 128);
                    }
                }
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                int t = t0 + u * 8;
                if (t < n) {
                    const u32* w = (const u32*)&vr[u];
                    float v8[8];
#pragma unroll
                    for (int i = 0; i < 4; i++) { v8[2 * i] = lo_f(w[i]); v8[2 * i + 1] = hi_f(w[i]); }
#pragma unroll
                    for (int g = 0; g < G; g++) {
                        const float pr = sc[g][t];
#pragma unroll
                        for (int i = 0; i < 8; i++) acc[g][i] += pr * v8[i];
                    }
                }
            }
        }
#pragma unroll
        for (int g = 0; g < G; g++) {
            __syncthreads();  // red is free again
#pragma unroll
            for (int i = 0; i < 8; i++) red[hw][l16 * 8 + i] = acc[g][i];
            __syncthreads();
            float o = 0.f;
#pragma unroll
            for (int i = 0; i < 8; i++) o += red[i][threadIdx.x];
            const u64 idx = slot(h0 + g, p);
            part_o[idx * 128 + threadIdx.x] = o;
            if (threadIdx.x == 0) { part_ml[idx * 2] = mx[g]; part_ml[idx * 2 + 1] = sum[g]; }
        }
    }
    merge_partitions(part_o, part_ml, done, out, heads, max_parts, part, out_stride, b, h0, G, len, gridDim.z);
}

// Short parts (≤ 64 tokens, small batches): a block per query head, one chunk, keys and values
// loaded together.
extern "C" __global__ void __launch_bounds__(128) decode_attn_short(DECODE_ATTN_ARGS) {
    decode_attn_body<8, 1>(qkv, tables, ctx, pool, part_o, part_ml, done, out, stride, heads, kv_heads,
                           max_blocks, max_parts, part, out_stride, scale, wave);
}
// Long parts (large batches) of a decoder with one query head per KV head (LLaVA-1.5): four
// keys per half-warp in flight, values in a second pass.
extern "C" __global__ void __launch_bounds__(128) decode_attn_g1(DECODE_ATTN_ARGS) {
    decode_attn_body<4, 1>(qkv, tables, ctx, pool, part_o, part_ml, done, out, stride, heads, kv_heads,
                           max_blocks, max_parts, part, out_stride, scale, wave);
}

#define DECODE_ATTN_GQA_SHARED 104448
#define DECODE_ATTN_GQA2_SHARED 69632
// Long parts of a grouped-query decoder (G = heads / kv_heads ≤ 16: Qwen2.5-VL-7B 7, -3B and
// -72B 8, -32B 5), on tensor cores: block (kv head, seq, p) attends the group's G query heads,
// the rows of one m16 tile (rows past G zero), to partition p of its sequence's context
// (part_len below). The block copies tiles of 64 keys
// and values through the block table into shared memory (cp.async, STAGES − 1 tiles of 32 KB in
// flight while one is attended; the block-table entries of the tile after those are read
// while it is attended, so a copy never waits on one); warp w attends keys w·16 … w·16 + 15 of each tile as the
// prefill does (attend_tile, its own online softmax), and the four warps' results are merged in
// shared memory into the partition's partial result. The scalar kernel spent 4 shuffles per key
// and head on its dot products: at batch 64 and 1,024 tokens of context it read the cache at
// 30 % of HBM bandwidth.
//
// Three stages (decode_attn_gqa) where the GPU grants a block 102 KB of shared memory, else two
// (decode_attn_gqa2: compute capability 8.6 / 8.9 grant 99 KB). With two, a block had one tile
// in flight and waited out each copy's latency: at batch 64 and 1,024 tokens it read the cache
// at 60 % of the copy bandwidth (exec/results/2026-12-04-h200-qwen-validate/bench-qwen.md).
template <int STAGES>
__device__ __forceinline__ void decode_gqa_body(DECODE_ATTN_ARGS) {
    after_predecessor();
    constexpr int D = 128, BK = 16, TILE = 4 * BK, LD = D + 8;
    // STAGES stages of K and V tiles (dynamic shared memory: more than the 48 KB of static);
    // once the last tile is used, the warps' results ([4][16][D] f32).
    extern __shared__ __align__(16) unsigned char dyn_smem[];
    bf16* kv = (bf16*)dyn_smem;
    __shared__ float wm[4][16], wl[4][16];
    static_assert(2 * TILE * LD * 2 >= 4 * 16 * D * 4, "the warps' results fit one stage");
    const int G = heads / kv_heads;
    const int p = blockIdx.z, b = blockIdx.y, kvh = blockIdx.x, h0 = kvh * G;
    // Partitions of one length for the whole step, as long as one wave of `wave` resident blocks
    // takes the step's context in once each sequence's last, partial partition has its own
    // block: a long partition costs its pipeline's start and its merge once, and the length
    // grows with the step's total context. A batch of mixed contexts still waits on its long
    // sequences' full partitions, which a batch of the same total evenly spread does not (the
    // phase table's): the replay's decode steps of 48–64 sequences ran 10 % over it
    // (exec/results/2026-12-04-h200-qwen-validate/). At least `part` tokens and whole tiles; the
    // grid covers the longest context at `part`, and blocks past their sequence's partitions
    // leave at once.
    __shared__ u32 step_tokens;
    if (threadIdx.x < 32) {
        u32 t = 0;
        for (u32 i = threadIdx.x; i < gridDim.y; i += 32) t += ctx[i];
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
        if (threadIdx.x == 0) step_tokens = t;
    }
    __syncthreads();
    const int len = ctx[b];
    const u32 tails = gridDim.y * kv_heads, budget = wave > tails ? wave - tails : 1u;
    const u32 per_block = (u32)(((u64)step_tokens * kv_heads + budget - 1) / budget);
    const u32 part_len = max(part, (per_block + TILE - 1) / TILE * TILE);
    // A sequence of length 0 (batch padding) keeps one block, whose merge writes its zeros.
    const u32 parts = max(1u, (len + part_len - 1) / part_len);
    if (p >= parts) return;
    const int start = p * part_len;
    const u64 slot0 = ((u64)b * heads + h0) * max_parts + p;  // head h0 + g: + g·max_parts
    // A sequence in one partition (every sequence of a large batch, whose partitions are
    // sized to the step) is written by its block alone: no partial results, no merge. The
    // values are the merge's own: o·(1/l) of the one partition, zeros where there was no key.
    bf16* out_row = out + (u64)b * out_stride + (u64)h0 * 128;
    if (start >= len) {
        if (parts == 1) {
            for (int h = 0; h < G; h++) out_row[h * 128 + threadIdx.x] = 0;
        } else if (threadIdx.x < G) {
            part_ml[(slot0 + threadIdx.x * max_parts) * 2] = NEG_INF;
            part_ml[(slot0 + threadIdx.x * max_parts) * 2 + 1] = 0.f;
        }
    } else {
        const int n = min(len - start, (int)part_len);
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
        const float sl2 = scale * 1.4426950408889634f;
        // Q fragments: row g is query head h0 + g, row g + 8 head h0 + g + 8.
        u32 qa[1][D / 16][4];
        const bf16* q0 = qkv + (u64)b * stride + (u64)(h0 + g) * D;
        const bf16* q1 = q0 + 8 * D;
        const bool r0 = g < G, r1 = g + 8 < G;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const int c0 = kk * 16 + tq * 2;
            qa[0][kk][0] = r0 ? *(const u32*)(q0 + c0) : 0u;
            qa[0][kk][1] = r1 ? *(const u32*)(q1 + c0) : 0u;
            qa[0][kk][2] = r0 ? *(const u32*)(q0 + c0 + 8) : 0u;
            qa[0][kk][3] = r1 ? *(const u32*)(q1 + c0 + 8) : 0u;
        }
        float o[1][D / 8][4], m[1][2] = {{NEG_INF, NEG_INF}}, l[1][2] = {{0.f, 0.f}};
#pragma unroll
        for (int i = 0; i < D / 8; i++) o[0][i][0] = o[0][i][1] = o[0][i][2] = o[0][i][3] = 0.f;
        const int* tab = tables + (u64)b * max_blocks;
        const u64 kv_step = (u64)kv_heads * KV_BLOCK * D;  // K → V within a block
        // Thread t copies 16-byte column (t % 16) of rows t / 16, + 8, …; rows past the
        // partition are zeros (their scores are masked, but P·V must not meet NaN). A tile's 64
        // rows lie in 4 KV blocks (partitions start at multiples of 64): row t / 16 + 8·i in
        // block i / 2, slot (t / 16) % 16 + 8·(i % 2).
        const int lr = threadIdx.x >> 4, lc = (threadIdx.x & 15) * 8;
        const bf16* head = pool + (u64)kvh * KV_BLOCK * D + lc;
        auto blocks_of = [&](int j0, int (&tb)[4]) {
            const int first = (start + j0) / KV_BLOCK;
#pragma unroll
            for (int q = 0; q < 4; q++) tb[q] = j0 < n && first + q < (int)max_blocks ? tab[first + q] : 0;
        };
        // Tile j0 (its blocks tb) into stage st; one commit group a tile, empty past the end.
        auto load = [&](int st, int j0, const int (&tb)[4]) {
            if (j0 < n) {
                bf16 *Ks = kv + st * 2 * TILE * LD, *Vs = Ks + TILE * LD;
#pragma unroll
                for (int i = 0; i < TILE / 8; i++) {
                    const int r = lr + 8 * i;
                    bf16 *kd = Ks + r * LD + lc, *vd = Vs + r * LD + lc;
                    if (j0 + r < n) {
                        const bf16* row = head + (u64)tb[i >> 1] * 2 * kv_step + (r % KV_BLOCK) * D;
                        cp_async16(kd, row);
                        cp_async16(vd, row + kv_step);
                    } else {
                        *(uint4*)kd = make_uint4(0, 0, 0, 0);
                        *(uint4*)vd = make_uint4(0, 0, 0, 0);
                    }
                }
            }
            cp_async_commit();
        };
        int tb[4];
#pragma unroll
        for (int st = 0; st < STAGES - 1; st++) {
            blocks_of(st * TILE, tb);
            load(st, st * TILE, tb);
        }
        blocks_of((STAGES - 1) * TILE, tb);
        for (int j0 = 0, it = 0; j0 < n; j0 += TILE, it++) {
            cp_async_wait<STAGES - 2>();  // tile `it` is in; the tiles after it stay in flight
            __syncthreads();
            // The stage attended in the last iteration, which every warp has left.
            load((it + STAGES - 1) % STAGES, j0 + (STAGES - 1) * TILE, tb);
            blocks_of(j0 + STAGES * TILE, tb);
            const bf16 *Ks = kv + (it % STAGES) * 2 * TILE * LD, *Vs = Ks + TILE * LD;
            const int w0 = j0 + warp * BK;
            if (w0 < n)
                attend_tile<D, BK, LD, 1>(Ks + warp * BK * LD, Vs + warp * BK * LD, qa, o, m, l, w0, n, n, 0, 0, sl2, g,
                                          tq);
        }
        cp_async_wait<0>();
        __syncthreads();  // every stage free: the warps' results go there
        // Each warp's rows: m is shared by a row's 4 lanes, l is summed across them.
        float* wo = (float*)kv;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            for (int o2 = 1; o2 < 4; o2 <<= 1) l[0][r] += __shfl_xor_sync(0xffffffffu, l[0][r], o2);
            if (tq == 0) {
                wm[warp][g + 8 * r] = m[0][r];
                wl[warp][g + 8 * r] = l[0][r];
            }
        }
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            const int c = dt * 8 + tq * 2;
            float* dst = wo + (warp * 16 + g) * D + c;
            dst[0] = o[0][dt][0];
            dst[1] = o[0][dt][1];
            dst[8 * D] = o[0][dt][2];
            dst[8 * D + 1] = o[0][dt][3];
        }
        __syncthreads();
        // The partition's partial result of head h0 + h, unnormalised, with its maximum in the
        // units decode_attn_body uses (scaled scores, natural exponent); a warp that saw no
        // key has m = −inf and weighs nothing.
        const int d = threadIdx.x;
        for (int h = 0; h < G; h++) {
            float mx = NEG_INF;
#pragma unroll
            for (int w = 0; w < 4; w++) mx = fmaxf(mx, wm[w][h]);
            float sum = 0.f, acc = 0.f;
#pragma unroll
            for (int w = 0; w < 4; w++) {
                const float c = wm[w][h] == NEG_INF ? 0.f : fast_exp2((wm[w][h] - mx) * sl2);
                sum += wl[w][h] * c;
                acc += wo[(w * 16 + h) * D + d] * c;
            }
            if (parts == 1) {
                out_row[h * 128 + d] = to_bf(acc * (sum > 0.f ? 1.f / sum : 0.f));
                continue;
            }
            const u64 idx = slot0 + (u64)h * max_parts;
            part_o[idx * 128 + d] = acc;
            if (d == 0) {
                part_ml[idx * 2] = mx * scale;
                part_ml[idx * 2 + 1] = sum;
            }
        }
    }
    if (parts > 1)
        merge_partitions(part_o, part_ml, done, out, heads, max_parts, part_len, out_stride, b, h0, G, len, parts);
}

extern "C" __global__ void __launch_bounds__(128) decode_attn_gqa(DECODE_ATTN_ARGS) {
    static_assert(DECODE_ATTN_GQA_SHARED == 3 * 2 * 64 * 136 * 2, "three stages of K and V tiles");
    decode_gqa_body<3>(qkv, tables, ctx, pool, part_o, part_ml, done, out, stride, heads, kv_heads, max_blocks,
                       max_parts, part, out_stride, scale, wave);
}
extern "C" __global__ void __launch_bounds__(128) decode_attn_gqa2(DECODE_ATTN_ARGS) {
    static_assert(DECODE_ATTN_GQA2_SHARED == 2 * 2 * 64 * 136 * 2, "two stages of K and V tiles");
    decode_gqa_body<2>(qkv, tables, ctx, pool, part_o, part_ml, done, out, stride, heads, kv_heads, max_blocks,
                       max_parts, part, out_stride, scale, wave);
}

// Greedy sampling: index of each row's largest logit (f32 [rows, n]); ties → the lowest index.
extern "C" __global__ void argmax_rows(const float* __restrict__ x, int* __restrict__ out, u32 n) {
    after_predecessor();
    const float* r = x + (u64)blockIdx.x * n;
    float best = NEG_INF;
    int bi = 0x7fffffff;
    auto take = [&](float v, u32 i) {
        if (v > best || (v == best && (int)i < bi)) { best = v; bi = i; }
    };
    // 16-byte loads where the row allows them (a vocabulary of 152,064 is 37 loads a thread
    // at 1,024 threads), then the rest one by one.
    const u32 n4 = n % 4 == 0 && ((u64)r & 15) == 0 ? n / 4 : 0;
    for (u32 i = threadIdx.x; i < n4; i += blockDim.x) {
        const float4 v = ((const float4*)r)[i];
        take(v.x, 4 * i);
        take(v.y, 4 * i + 1);
        take(v.z, 4 * i + 2);
        take(v.w, 4 * i + 3);
    }
    for (u32 i = 4 * n4 + threadIdx.x; i < n; i += blockDim.x) take(r[i], i);
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, best, o);
        int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        if (v2 > best || (v2 == best && i2 < bi)) { best = v2; bi = i2; }
    }
    __shared__ float bv[32];
    __shared__ int bx[32];
    int w = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) { bv[w] = best; bx[w] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int i = 1; i < (int)(blockDim.x >> 5); i++)
            if (bv[i] > best || (bv[i] == best && bx[i] < bi)) { best = bv[i]; bi = bx[i]; }
        out[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
    }
}

// ---------------------------------------------------------------------------------------------
// Batch-1 products: Y[n] (= or +=) Σ_k X[k] · W[n, k]. Memory-bound: each weight is read once,
// so the point is to keep enough 16-byte loads in flight — two rows a warp, eight vectors of
// each unrolled: sixteen loads a lane. (An earlier version took up to 8 rows of X; its
// accumulators for 8 rows cost the registers that more loads in flight need, and above one row
// it lost to cuBLASLt anyway.) The engine races it against cuBLASLt per shape
// (exec/src/model/gpu.rs `tune_decode_plans`). K a multiple of 8; grid·block/32 ≥ N/2 warps.
extern "C" __global__ void __launch_bounds__(256) gemv(const bf16* __restrict__ X, const bf16* __restrict__ W,
                                                       const bf16* __restrict__ bias, void* __restrict__ Y, u32 N,
                                                       u32 K, int accumulate, int out_f32) {
    after_predecessor();
    const u32 warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    const u32 n0 = warp * 2;
    if (n0 >= N) return;
    const bool two = n0 + 1 < N;
    const u32 K8 = K / 8;
    const uint4* w0 = (const uint4*)(W + (u64)n0 * K);
    const uint4* w1 = two ? w0 + K8 : w0;
    const uint4* xv = (const uint4*)X;
    float acc0 = 0.f, acc1 = 0.f;
    constexpr int U = 8;
    for (u32 k = lane; k < K8; k += 32 * U) {
        uint4 a[U], b[U], x[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const u32 kk = k + u * 32;
            if (kk < K8) {
                a[u] = __ldg(w0 + kk);
                b[u] = __ldg(w1 + kk);
                x[u] = __ldg(xv + kk);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (k + u * 32 >= K8) break;
            const u32 *wa = (const u32*)&a[u], *wb = (const u32*)&b[u], *xw = (const u32*)&x[u];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float x0 = lo_f(xw[i]), x1 = hi_f(xw[i]);
                acc0 += x0 * lo_f(wa[i]) + x1 * hi_f(wa[i]);
                acc1 += x0 * lo_f(wb[i]) + x1 * hi_f(wb[i]);
            }
        }
    }
    const float s0 = warp_sum(acc0), s1 = warp_sum(acc1);
    if (lane == 0) {
        for (int j = 0; j < (two ? 2 : 1); j++) {
            const u64 o = n0 + j;
            const float v = (j == 0 ? s0 : s1) + (bias ? bf(bias[o]) : 0.f);
            if (out_f32) {
                float* y = (float*)Y;
                y[o] = accumulate ? y[o] + v : v;
            } else {
                bf16* y = (bf16*)Y;
                y[o] = to_bf(accumulate ? bf(y[o]) + v : v);
            }
        }
    }
}

// ---- Skinny products: Y[m, n] (= or +=) X[m, k]·W[n, k]ᵀ (+ bias) for decode batches of
// 2 ≤ m ≤ 64 rows, on tensor cores. Such a product is a stream of the weight through the SMs;
// cuBLASLt tiles it by output columns, so a matrix of few columns and a long k (Qwen2.5-VL-7B's
// down projection, 3,584 × 18,944: 28 tiles of 128 columns for 132 SMs) keeps most SMs idle,
// and at batch 64 it read the weights at 45–72 % of the copy bandwidth
// (exec/results/2026-12-04-h200-qwen-validate/bench-qwen.md). Here the work is split evenly
// ("stream-K"): the (column tile, k tile) iterations of the whole product, in order, are cut
// into one contiguous range per block, with exactly one wave of blocks (grid = the blocks the
// GPU holds at once). A block whose range covers a column tile whole writes it; the blocks
// sharing a tile each store their partial sums in `part` and the last to arrive (counted in
// `count`, reset by it for the next product) adds them in block order — the same sum whatever
// the arrival order — and writes the tile. The weight's first stages are requested before
// waiting for the kernel ahead (it never changes while serving), so they arrive while that
// kernel finishes.
//
// Block: 8 warps; a tile of 128 columns (warp w: columns w·16 … w·16 + 15, two n8 tiles) by all
// of X's rows (MT m16 tiles, rows ≥ m read as zero and never written); k tiles of 64, four
// stages in flight (GEMM_SKINNY_SHARED bytes of dynamic shared memory). n a multiple of 128,
// k of 64 (the host checks). part: 2 slots a block of SK_SLOT floats; count: n / 128 u32, zero.
#define SK_BN 128
#define SK_BK 64
#define SK_STAGES 4
#define SK_LD (SK_BK + 8)
#define SK_SLOT (4 * 2 * 4 * 256)
#define GEMM_SKINNY_SHARED 110592
static_assert(GEMM_SKINNY_SHARED == SK_STAGES * (SK_BN + 64) * SK_LD * 2, "stages of W and X tiles");

__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, bool live) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
                 "r"(live ? 16 : 0)
                 : "memory");
}

// The block whose range holds iteration i: ranges are [c·T / G, (c + 1)·T / G).
__device__ __forceinline__ u64 skinny_owner(u64 i, u64 total, u64 G) { return ((i + 1) * G + total - 1) / total - 1; }

template <int MT>
__device__ __forceinline__ void skinny_body(const bf16* __restrict__ X, const bf16* __restrict__ W,
                                            const bf16* __restrict__ bias, void* __restrict__ Y,
                                            float* __restrict__ part, u32* __restrict__ count, u32 m, u32 n, u32 k,
                                            int accumulate, int out_f32) {
    extern __shared__ __align__(16) unsigned char skinny_smem[];
    __shared__ int last;
    bf16* Ws = (bf16*)skinny_smem;                 // [SK_STAGES][SK_BN][SK_LD]
    bf16* Xs = Ws + SK_STAGES * SK_BN * SK_LD;  // [SK_STAGES][64][SK_LD]
    const u32 kt = k / SK_BK;
    const u64 total = (u64)(n / SK_BN) * kt, G = gridDim.x, c = blockIdx.x;
    const u64 start = c * total / G, end = (c + 1) * total / G;
    const u32 len = (u32)(end - start);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
    // An iteration is (column tile, k tile); positions advance one k tile at a time (no 64-bit
    // division in the loop: at a few iterations a block, the loop's own arithmetic showed).
    struct Pos {
        u32 tile, kk;
    };
    const Pos first = {(u32)(start / kt), (u32)(start % kt)};
    auto advance = [&](Pos& p) {
        if (++p.kk == kt) p.kk = 0, p.tile++;
    };
    // 128 rows of 8 vectors: 4 a thread, 8 threads a row's 128 bytes.
    auto load_w = [&](Pos p, int st) {
        const bf16* src = W + (u64)p.tile * SK_BN * k + p.kk * SK_BK;
        bf16* dst = Ws + st * SK_BN * SK_LD;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int v = tid + i * 256, r = v >> 3, cv = v & 7;
            cp_async16(dst + r * SK_LD + cv * 8, src + (u64)r * k + cv * 8);
        }
    };
    auto load_x = [&](Pos p, int st) {
        const bf16* src = X + p.kk * SK_BK;
        bf16* dst = Xs + st * 64 * SK_LD;
#pragma unroll
        for (int v = tid; v < MT * 16 * 8; v += 256) {
            const int r = v >> 3, cv = v & 7;
            const bool live = (u32)r < m;
            cp_async16_zfill(dst + r * SK_LD + cv * 8, src + (u64)(live ? r : 0) * k + cv * 8, live);
        }
    };
    Pos ld = first;
#pragma unroll
    for (int s = 0; s < SK_STAGES - 1; s++) {
        if ((u32)s < len) load_w(ld, s);
        advance(ld);
    }
    after_predecessor();
    ld = first;
#pragma unroll
    for (int s = 0; s < SK_STAGES - 1; s++) {
        if ((u32)s < len) load_x(ld, s);
        advance(ld);
        cp_async_commit();
    }

    float acc[MT][2][4];
    auto clear = [&]() {
#pragma unroll
        for (int t = 0; t < MT; t++)
#pragma unroll
            for (int j = 0; j < 2; j++) acc[t][j][0] = acc[t][j][1] = acc[t][j][2] = acc[t][j][3] = 0.f;
    };
    clear();
    const int mi = lane >> 3, mr = lane & 7;
    Pos cur = first;
    for (u32 i = 0, st = 0; i < len; i++, advance(cur), st = st + 1 == SK_STAGES ? 0 : st + 1) {
        cp_async_wait<SK_STAGES - 2>();
        __syncthreads();
        // Into the stage read in the previous iteration, which every warp has finished.
        if (i + SK_STAGES - 1 < len) {
            const int ns = st == 0 ? SK_STAGES - 1 : st - 1;
            load_w(ld, ns);
            load_x(ld, ns);
        }
        advance(ld);
        cp_async_commit();
        // B fragments as decode/prefill attention reads K: matrix mi of lane (n row mr, k 0/8 of
        // k16 step kk, then of kk + 1). A fragments: rows lane % 16, k + 8·(lane / 16).
        const u32 bbase =
            smem_addr(Ws + st * SK_BN * SK_LD + (warp * 16 + mr) * SK_LD + (mi >> 1) * 16 + (mi & 1) * 8);
        const u32 abase = smem_addr(Xs + st * 64 * SK_LD + (lane & 15) * SK_LD + (lane >> 4) * 8);
#pragma unroll
        for (int kk = 0; kk < SK_BK / 16; kk += 2) {
            u32 b[2][4];
#pragma unroll
            for (int j = 0; j < 2; j++) ldmatrix_x4(b[j], bbase + (j * 8 * SK_LD + kk * 16) * 2);
#pragma unroll
            for (int h = 0; h < 2; h++) {
#pragma unroll
                for (int t = 0; t < MT; t++) {
                    u32 a[4];
                    ldmatrix_x4(a, abase + (t * 16 * SK_LD + (kk + h) * 16) * 2);
                    mma_bf16(acc[t][0], a, b[0][2 * h], b[0][2 * h + 1]);
                    mma_bf16(acc[t][1], a, b[1][2 * h], b[1][2 * h + 1]);
                }
            }
        }
        if (cur.kk + 1 != kt && i + 1 != len) continue;
        // The end of this block's share of column tile `tile`.
        const u64 tile = cur.tile, t0 = tile * kt;
        if (start > t0 || end < t0 + kt) {
            const u64 firstb = skinny_owner(t0, total, G), lastb = skinny_owner(t0 + kt - 1, total, G);
            float4* mine = (float4*)(part + (c * 2 + (first.tile == tile ? 0 : 1)) * SK_SLOT);
#pragma unroll
            for (int t = 0; t < MT; t++)
#pragma unroll
                for (int j = 0; j < 2; j++)
                    mine[(t * 2 + j) * 256 + tid] = make_float4(acc[t][j][0], acc[t][j][1], acc[t][j][2], acc[t][j][3]);
            __threadfence();
            __syncthreads();
            if (tid == 0) {
                last = atomicAdd(&count[tile], 1u) == (u32)(lastb - firstb);
                if (last) count[tile] = 0;
            }
            __syncthreads();
            if (!last) {
                clear();
                continue;
            }
            __threadfence();
            clear();
            // 4 / MT slots' loads in flight at a time (what the registers hold), added in block
            // order.
            constexpr int Q = 4 / MT;
            for (u64 b0 = firstb; b0 <= lastb; b0 += Q) {
                float4 v[Q][MT][2];
#pragma unroll
                for (int q = 0; q < Q; q++) {
                    const u64 b = b0 + q;
                    if (b > lastb) break;
                    const u64 slot = b * 2 + ((b * total / G) / kt == tile ? 0 : 1);
                    const float4* p = (const float4*)(part + slot * SK_SLOT);
#pragma unroll
                    for (int t = 0; t < MT; t++)
#pragma unroll
                        for (int j = 0; j < 2; j++) v[q][t][j] = __ldcg(p + (t * 2 + j) * 256 + tid);
                }
#pragma unroll
                for (int q = 0; q < Q; q++) {
                    if (b0 + q > lastb) break;
#pragma unroll
                    for (int t = 0; t < MT; t++)
#pragma unroll
                        for (int j = 0; j < 2; j++) {
                            acc[t][j][0] += v[q][t][j].x, acc[t][j][1] += v[q][t][j].y;
                            acc[t][j][2] += v[q][t][j].z, acc[t][j][3] += v[q][t][j].w;
                        }
                }
            }
        }
        // Lane (g, tq) holds rows t·16 + g (+ 8) and columns … + j·8 + 2·tq, + 1.
#pragma unroll
        for (int t = 0; t < MT; t++)
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const u32 row = t * 16 + g + r * 8;
                    if (row >= m) continue;
                    const u64 col = tile * SK_BN + warp * 16 + j * 8 + tq * 2, o = (u64)row * n + col;
                    float v0 = acc[t][j][2 * r], v1 = acc[t][j][2 * r + 1];
                    if (bias) v0 += bf(bias[col]), v1 += bf(bias[col + 1]);
                    if (out_f32) {
                        float2* y = (float2*)((float*)Y + o);
                        if (accumulate) {
                            const float2 old = *y;
                            v0 += old.x, v1 += old.y;
                        }
                        *y = make_float2(v0, v1);
                    } else {
                        u32* y = (u32*)((bf16*)Y + o);
                        if (accumulate) {
                            const u32 old = *y;
                            v0 += lo_f(old), v1 += hi_f(old);
                        }
                        *y = pack_bf2(v0, v1);
                    }
                }
        clear();
    }
}

extern "C" __global__ void __launch_bounds__(256, 2) gemm_skinny(const bf16* __restrict__ X, const bf16* __restrict__ W,
                                                              const bf16* __restrict__ bias, void* __restrict__ Y,
                                                              float* __restrict__ part, u32* __restrict__ count,
                                                              u32 m, u32 n, u32 k, int accumulate, int out_f32) {
    if (m <= 16)
        skinny_body<1>(X, W, bias, Y, part, count, m, n, k, accumulate, out_f32);
    else if (m <= 32)
        skinny_body<2>(X, W, bias, Y, part, count, m, n, k, accumulate, out_f32);
    else
        skinny_body<4>(X, W, bias, Y, part, count, m, n, k, accumulate, out_f32);
}
